"""Between steps the build hands the C heap's free pages back to the system: a step over
millions of samples would otherwise leave the build's resident memory at its peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _core_util import ROOT, demo_copy

PROBE = """
import json, os
from vlitc.run.executor import trim_heap

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20

blocks = [bytes(1000) + bytes([i % 256]) for i in range(300_000)]  # malloc'd, not pymalloc's
last = blocks[-1]  # the top of the heap stays in use: glibc cannot shrink it by itself
before = rss()
del blocks
freed = rss()
trim_heap()
print(json.dumps({"before": before, "freed": freed, "trimmed": rss()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc")
def test_the_heap_trim_gives_freed_memory_back_to_the_system():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout)
    assert rss["before"] - rss["freed"] < 100  # freed, but still the process's
    assert rss["freed"] - rss["trimmed"] > 200  # handed back


def test_a_build_trims_the_heap_after_planning_and_every_step(tmp_path, monkeypatch):
    from vlitc import api
    from vlitc.run import executor

    calls: list[str] = []  # the module of each trim's caller (after a step: with its caches)
    for name in ("trim_heap", "end_step"):
        monkeypatch.setattr(executor, name, lambda: calls.append(sys._getframe(1).f_globals["__name__"]))
    result = api.build(demo_copy(tmp_path), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    steps = result.manifest["steps"]
    assert calls.count("vlitc.run.executor") == 1 + len(steps) > 4
    # the balance trims again between its passes, once its selection is made
    assert any(s["id"] == "balance" for s in steps) and set(calls) == {"vlitc.run.executor", "vlitc.run.runners"}


ARENAS = """
import json, random
from vlitc.run import executor

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20

rows = [(f"{i:012d}.png", i, i) for i in range(1_000_000)]  # a folder listing's rows
random.Random(0).shuffle(rows)  # sorted by name: freed in another order than made
before = rss()
del rows
freed = rss()
executor.trim_heap()
print(json.dumps({"before": before, "freed": freed, "trimmed": rss()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_the_trim_frees_the_arenas_that_freed_objects_of_the_free_lists_pin():
    """The last thousands of tuples freed wait in the interpreter's free list, each in another
    arena of the allocator: no arena of millions of freed rows is handed back until the free
    lists are emptied (a full collection, run by the trim)."""
    proc = subprocess.run([sys.executable, "-c", ARENAS], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout)
    assert rss["before"] - rss["freed"] < 60  # freed, but pinned
    assert rss["freed"] - rss["trimmed"] > 100  # handed back

def test_gathered_features_keep_arrays_and_spilled_lists_on_disk(tmp_path):
    """A dataset-scope measure gathers every chunk's features: arrays are memory-mapped files,
    and the chunks' id lists named to spill are a file read back item by item, in order."""
    import numpy as np

    from vlitc.run.shards import Gathered

    g = Gathered(tmp_path, spill=("ids",))
    g.add({"sig": np.arange(6, dtype=np.uint64).reshape(3, 2), "ids": [b'["a","b"]', b""], "scope": ["x"]})
    g.add({"sig": np.arange(6, 8, dtype=np.uint64).reshape(1, 2), "ids": [b'["c"]'], "scope": ["y"]})
    out = g.close()
    assert isinstance(out["sig"], np.memmap) and out["sig"].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert out["scope"] == ["x", "y"]
    assert not isinstance(out["ids"], list) and list(out["ids"]) == [b'["a","b"]', b"", b'["c"]']


def _staged_output(tmp_path, chunks, spelled: bool):
    """A staged output of ``chunks`` (each a list of lines, one staging file each) cut into
    shards by a stand-in engine that joins each shard's runs as :func:`write_shard` does."""
    import hashlib
    from types import SimpleNamespace

    import numpy as np

    from vlitc.run.runners import Staged
    from vlitc.run.shards import ChunkResult

    def join(chunk):
        directory, names, files, offsets, lengths, count = chunk
        data = b"".join((Path(directory) / names[f]).read_bytes()[o:o + n]
                        for f, o, n in zip(files.tolist(), offsets.tolist(), lengths.tolist(), strict=True))
        assert data.count(b"\n") == count
        return ChunkResult(count=count, features={"shard": {"sha256": hashlib.sha256(data).hexdigest(),
                                                            "count": count, "data": data}})

    engine = SimpleNamespace(map=lambda fn, job, items: [join(c) for c in items])
    (tmp_path / "tmp").mkdir(exist_ok=True)
    staged = Staged(SimpleNamespace(store=SimpleNamespace(tmp=tmp_path / "tmp"), engine=engine))
    for i, lines in enumerate(chunks):
        (Path(staged.dir) / str(i)).write_bytes(b"".join(lines))
        lengths = [len(line) for line in lines]
        offsets = (np.cumsum(lengths) - lengths) if spelled else None
        staged.add(str(i), lengths, offsets=offsets)
    try:
        return staged.close(None)
    finally:
        staged.remove()


def test_staged_whole_file_chunks_cut_the_same_shards(tmp_path):
    """A task's chunks (whole files, in output order) keep only their lines' lengths; their
    shards are cut as they go, the same bytes as when every line's file and offset are kept,
    across chunks that end inside a shard, span several and hold nothing."""
    import random

    from vlitc.run.store import SHARD_SIZE

    rng = random.Random(3)
    sizes = [7, SHARD_SIZE - 7, 0, SHARD_SIZE + 5, 3, 2 * SHARD_SIZE, 11]
    chunks = [[b"x" * rng.randint(0, 9) + b"%d\n" % i for i in range(n)] for n in sizes]
    plain = _staged_output(tmp_path, chunks, spelled=False)
    spelled = _staged_output(tmp_path, chunks, spelled=True)
    assert plain == spelled
    assert plain["count"] == sum(sizes)
    assert [s["count"] for s in plain["shards"]] == [SHARD_SIZE] * 4 + [sum(sizes) - 4 * SHARD_SIZE]
    assert b"".join(s["data"] for s in plain["shards"]) == b"".join(b"".join(c) for c in chunks)


def test_shards_cut_from_pieces_as_they_come_join_the_lines_in_order(tmp_path):
    """:func:`cut_shards` over pieces that pick lines of two files each (some in place, some
    skipped, some from a second file), pieces that end inside a shard, span several and hold
    nothing: each shard joins its lines in order, names only the files it reads, and reads
    lines that follow each other in one file as one run."""
    import random

    import numpy as np

    from vlitc.run.runners import cut_shards
    from vlitc.run.store import SHARD_SIZE

    rng = random.Random(4)
    names: list[str] = []
    pieces, want = [], []
    for k, n in enumerate([5, SHARD_SIZE - 5, 0, 2 * SHARD_SIZE + 3, 9]):
        base = [b"%d-%d-" % (k, i) + b"y" * rng.randint(0, 5) + b"\n" for i in range(n)]
        again = [b"again %d-%d\n" % (k, i) for i in range(n)]
        (tmp_path / f"{k}").write_bytes(b"".join(base))
        (tmp_path / f"{k}.again").write_bytes(b"".join(again))
        names += [f"{k}", f"{k}.again"]
        f, o, ln = [], [], []
        offs = np.cumsum([0] + [len(x) for x in base])
        aoffs = np.cumsum([0] + [len(x) for x in again])
        for i in range(n):
            pick = rng.random()
            if pick < 0.1:
                continue  # not chosen
            other = pick > 0.9
            f.append(len(names) - 1 if other else len(names) - 2)
            o.append(int(aoffs[i] if other else offs[i]))
            ln.append(len(again[i] if other else base[i]))
            want.append(again[i] if other else base[i])
        pieces.append((np.asarray(f, dtype=np.int32), np.asarray(o, dtype=np.int64), np.asarray(ln, dtype=np.int64)))
    got = list(cut_shards(str(tmp_path), names, iter(pieces)))
    data = []
    for directory, used, files, offsets, lengths, count in got:
        assert set(files.tolist()) == set(range(len(used))) and len(files) < count  # runs, not lines
        part = b"".join((Path(directory) / used[f]).read_bytes()[o:o + n]
                        for f, o, n in zip(files.tolist(), offsets.tolist(), lengths.tolist(), strict=True))
        assert part.count(b"\n") == count
        data.append(part)
    assert [c for *_rest, c in got] == [SHARD_SIZE] * (len(want) // SHARD_SIZE) + [len(want) % SHARD_SIZE]
    assert b"".join(data) == b"".join(want)


def test_staged_columns_are_32_bit_when_they_fit_and_64_bit_when_not(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from vlitc.run.runners import Staged, narrow

    assert narrow([0, 2**31 - 1]).dtype == np.int32
    assert narrow(np.array([0, 2**31], dtype=np.int64)).dtype == np.int64  # a value past 32 bits
    assert narrow([]).dtype == np.int32
    (tmp_path / "tmp").mkdir()
    staged = Staged(SimpleNamespace(store=SimpleNamespace(tmp=tmp_path / "tmp"), engine=None))
    try:
        staged.add("0", [5, 7], positions=[1, 0], offsets=[0, 5])
        staged.add("1", [3], positions=[2], offsets=[2**31 + 10])  # a 2 GB file's last line
        (f0, o0, n0), (_f1, o1, _n1) = staged._parts
        assert (o0.dtype, n0.dtype, staged._positions[0].dtype) == (np.int32,) * 3
        assert f0.dtype == np.uint16  # the file's number: 16 bits while the files are that few
        assert o1.dtype == np.int64 and int(o1[0]) == 2**31 + 10
    finally:
        staged.remove()
