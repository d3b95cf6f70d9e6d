"""The cache layout: sample bodies are stored once, by the step that last changed them; measures
store a stats column and filters a selection (and their drop reasons), as views of those bodies;
a view reads back as exactly the records its step meant, and its hash is made of its pieces'
hashes (no body is encoded or hashed to name it); entries of an older layout are ignored; gc
keeps what views refer to."""

from __future__ import annotations

import time

import orjson
import pytest
from _core_util import demo_copy, ran

from vlitc.api import build
from vlitc.cli.main import main
from vlitc.release import layout
from vlitc.run.store import LAYOUT, ZST, Store, entry_objects, view_hash


def _entries(cache, result) -> dict[str, dict]:
    return {s["id"]: orjson.loads((cache / "steps" / f"{s['key']}.json").read_bytes())
            for s in result.manifest["steps"]}


def _built(tmp_path):
    recipe = demo_copy(tmp_path)
    cache = tmp_path / "c"
    return recipe, cache, build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)


def test_measures_and_filters_keep_ids_and_stats_over_one_copy_of_the_bodies(tmp_path):
    recipe = demo_copy(tmp_path)
    recipe.write_text(recipe.read_text().replace("{type: min_words, min: 1}", "{type: min_words, min: 4}"))
    cache = tmp_path / "c"
    result = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    entries = _entries(cache, result)
    merge = entries["merge"]["outputs"]["main"]
    chain = [sid for sid in entries if sid.startswith(("measure:", "filter:"))]
    assert len(chain) == 6
    store = Store(cache)
    try:
        for sid in chain:
            for name, out in entries[sid]["outputs"].items():
                assert out["view"]["base"] == merge, (sid, name)  # the bodies the merge wrote
                own = sum((cache / "objects" / o[:2] / o).stat().st_size
                          for o in entry_objects({"layout": LAYOUT, "outputs": {name: out}}, own=True))
                bodies = sum(s["size"] for s in merge["shards"])
                assert own < bodies / 3, (sid, name, own, bodies)
                records = list(store.read(out))
                assert len(records) == out["count"]
                lines = list(store.read_lines(out))
                assert [orjson.loads(line) for line in lines] == records
        last_filter = [sid for sid in chain if sid.startswith("filter:")][-1]
        kept = entries[last_filter]["outputs"]["main"]
        sample = next(store.read(kept))
        assert set(sample["meta"]["stats"]) == {"structure", "min_words", "dedup"}
        dropped = [d for sid in chain if sid.startswith("filter:")
                   for d in store.read(entries[sid]["outputs"]["dropped"])]
        assert dropped and all(d["meta"]["drop"]["filter"] and d["meta"]["drop"]["reason"] for d in dropped)
    finally:
        store.close()
    # the cache holds the bodies a few times (source, tasks, merge, balance), not once per step
    shards = sum(p.stat().st_size for p in (cache / "objects").glob("*/*" + ZST))
    assert shards < 6 * sum(s["size"] for s in merge["shards"])


def _sample(i: int) -> dict:
    meta: dict = {"record_id": str(i)}
    if i % 7 == 0:
        meta["stats"] = {"earlier": {"n": i}}
    return {"id": f"t/{i}", "task": "t" if i % 4 else "u", "turns": [{"role": "user", "content": f"q{i}"}],
            "meta": meta}


def test_a_view_reads_back_as_the_records_its_step_meant_and_hashes_by_its_pieces(tmp_path):
    store = Store(tmp_path / "c")
    try:
        w = store.writer()
        w.shard_size = 20  # several base shards, so columns come in several pieces
        records = [_sample(i) for i in range(47)]
        w.write_all(records)
        base = w.close()
        assert len(base["shards"]) == 3

        # a measure: stats for the samples of task "t" only
        expected = orjson.loads(orjson.dumps(records))
        measure = store.view_writer(base, ["meta", "stats", "len"])
        for s in expected:
            value = b""
            if s["task"] == "t":
                s.setdefault("meta", {}).setdefault("stats", {})["len"] = {"chars": len(s["id"]), "x": 0.5}
                value = orjson.dumps(s["meta"]["stats"]["len"])
            measure.add(True, value)
        measured = measure.close()
        assert list(store.read(measured)) == expected
        stats = [s["meta"].get("stats", {}).get("len") for s in expected]
        assert list(store.column(measured, ["meta", "stats", "len"])) == stats  # from the column
        assert list(store.column(base, ["meta", "stats", "earlier"])) == \
            [{"n": i} if i % 7 == 0 else None for i in range(47)]  # from the bodies

        # a filter over the view: kept rows and dropped ones with their reasons
        kept_w, dropped_w = store.view_writer(measured), store.view_writer(measured, ["meta", "drop"])
        kept, dropped = [], []
        for i, s in enumerate(store.read(measured)):
            if i % 3:
                kept_w.add(True)
                dropped_w.add(False)
                kept.append(s)
            else:
                kept_w.add(False)
                s["meta"]["drop"] = {"filter": "len", "reason": f"row {i}"}
                dropped_w.add(True, orjson.dumps(s["meta"]["drop"]))
                dropped.append(s)
        kept_out, dropped_out = kept_w.close(), dropped_w.close()

        # a second measure over the narrowed view
        again = store.view_writer(kept_out, ["meta", "stats", "second"])
        second = []
        for s in store.read(kept_out):
            s["meta"].setdefault("stats", {})["second"] = [s["id"]]
            again.add(True, orjson.dumps([s["id"]]))
            second.append(s)
        second_out = again.close()

        for out, want in ((kept_out, kept), (dropped_out, dropped), (second_out, second)):
            assert out["count"] == len(want) and out["view"]["base"] == base
            assert list(store.read(out)) == want
            assert list(store.read_lines(out)) == [orjson.dumps(r) + b"\n" for r in want]
            view = out["view"]
            assert out["hash"] == view_hash(base, view["select"], view["columns"])
        assert [len(c["pieces"]) for c in second_out["view"]["columns"]] == [3, 3]
        # the hash names the content: the same stats give the same hash, another value another
        hashes = {o["hash"] for o in (base, measured, kept_out, dropped_out, second_out)}
        assert len(hashes) == 5

        def remeasure(change: int | None) -> str:
            w = store.view_writer(base, ["meta", "stats", "len"])
            for i, s in enumerate(records):
                value = b"" if s["task"] != "t" else \
                    orjson.dumps({"chars": len(s["id"]) + (i == change), "x": 0.5})
                w.add(True, value)
            return w.close()["hash"]

        assert remeasure(None) == measured["hash"] and remeasure(5) != measured["hash"]
        # a measure over a view that holds no row of some base shards (the first and the middle)
        gap_w = store.view_writer(measured)
        for i in range(measured["count"]):
            gap_w.add(20 <= i < 40 or i >= 45)
        gap = gap_w.close()
        gm = store.view_writer(gap, ["meta", "stats", "late"])
        want = []
        for s in store.read(gap):
            s["meta"].setdefault("stats", {})["late"] = 1
            gm.add(True, b"1")
            want.append(s)
        late = gm.close()
        assert [r["id"] for r in store.read(late)] == [f"t/{i}" for i in (*range(20, 40), 45, 46)]
        assert list(store.read(late)) == want

        # a range of records, as a map step's chunk reads it (across shards, empty, past the end)
        for out in (base, measured, kept_out, dropped_out, second_out, gap, late):
            whole = list(store.read(out))
            for lo, hi in ((0, 5), (3, 25), (18, 41), (19, 20), (20, 20), (30, 100), (0, 100)):
                assert list(store.read_range(out, lo, hi)) == whole[lo:hi], (lo, hi)
            # only the fields a reader looks at: a column under others is not put in
            plain = [{k: v for k, v in r.items() if k != "meta"} for r in whole]
            assert [{k: v for k, v in r.items() if k != "meta"} for r in store.read_range(out, 0, 100, ["id"])] \
                == plain
            if out is second_out:
                assert [r["meta"].get("stats", {}).get("second") for r in store.read_range(out, 0, 100, ["id"])] \
                    == [None] * len(whole)

        # some of a view's records, by index, without putting the others together
        only = [i % 2 == 0 for i in range(second_out["count"])]
        assert [(i, orjson.loads(line)) for i, line in store.read_some(second_out, only)] == \
            [(i, r) for i, r in enumerate(second) if i % 2 == 0]
        assert [i for i, _ in store.read_some(base, [i > 40 for i in range(47)])] == list(range(41, 47))
    finally:
        store.close()


def test_an_entry_of_an_older_layout_is_ignored_never_read(tmp_path):
    recipe, cache, first = _built(tmp_path)
    store = Store(cache)
    try:  # what an older vlitc wrote: plain shards, no layout; here holding the wrong records
        sha, size = store.put_bytes(orjson.dumps({"id": "stale", "meta": {}}) + b"\n")
    finally:
        store.close()
    old = {"outputs": {"main": {"shards": [{"sha256": sha, "count": 1, "size": size}],
                                "count": 1, "hash": "h"}}, "n_in": 1}
    for s in first.manifest["steps"]:
        (cache / "steps" / f"{s['key']}.json").write_bytes(orjson.dumps(old))
    second = build(recipe, out_dir=tmp_path / "rel2", cache_dir=cache)
    assert ran(second) == {s["id"] for s in first.manifest["steps"]}
    assert layout.file_hashes(second.manifest) == layout.file_hashes(first.manifest)
    # (the report's key also covers the steps' counters, which a rerun may word differently)
    keys = [{s["id"]: s["key"] for s in r.manifest["steps"] if s["id"] != "report"} for r in (first, second)]
    assert keys[0] == keys[1]
    assert not any("corrupt" in e.get("message", "") for e in second.events)
    assert all(orjson.loads((cache / "steps" / f"{s['key']}.json").read_bytes())["layout"] == LAYOUT
               for s in second.manifest["steps"])


def test_gc_keeps_every_object_a_view_refers_to(tmp_path):
    recipe, cache, first = _built(tmp_path)
    stray = Store(cache)
    try:
        orphan = stray.put_object(b"nobody refers to this\n")["sha256"] + ZST
    finally:
        stray.close()
    assert main(["cache", "gc", "--cache-dir", str(cache)]) == 0
    assert not (cache / "objects" / orphan[:2] / orphan).exists()
    entries = _entries(cache, first)
    for entry in entries.values():
        for name in entry_objects(entry):
            assert (cache / "objects" / name[:2] / name).is_file(), name
    again = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert ran(again) == set() and not layout.verify(tmp_path / "rel")
    # the views are read again when balance reruns: every piece is still there
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 150"))
    third = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert "balance" in ran(third) and not any(s.startswith(("measure:", "filter:")) for s in ran(third))
    assert not layout.verify(tmp_path / "rel")


def test_a_compressed_object_that_expands_past_the_bound_is_corrupt_not_read_whole(tmp_path,
                                                                                  monkeypatch):
    import hashlib

    import zstandard

    from vlitc.run import store as store_mod
    from vlitc.run.store import CorruptObject

    store = Store(tmp_path / "c")
    bomb = zstandard.ZstdCompressor().compress(b"\n" * 10_000)  # 10 kB of lines from ~20 bytes
    sha = hashlib.sha256(b"\n" * 10_000).hexdigest()  # even its hash is right
    path = store.object_path(sha + ZST)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bomb)
    assert store.plain(sha) == b"\n" * 10_000  # in one call: it states a size it may have
    monkeypatch.setattr(store_mod, "ONE_CALL_RATIO", 0)
    monkeypatch.setattr(store_mod, "MAX_PLAIN", 1_000)
    with pytest.raises(CorruptObject):
        store.plain(sha)
    monkeypatch.setattr(store_mod, "MAX_PLAIN", 20_000)
    assert store.plain(sha) == b"\n" * 10_000  # in pieces
    monkeypatch.setattr(store_mod, "ONE_CALL_RATIO", 64)
    monkeypatch.setattr(store_mod, "MAX_PLAIN", 1 << 20)
    plain = b'{"a": 1}\n' * 5_000
    streamed = zstandard.ZstdCompressor().compressobj()
    unsized = streamed.compress(plain) + streamed.flush()  # a frame that states no size
    for packed in (unsized, unsized[:-3]):
        path = store.object_path(hashlib.sha256(plain).hexdigest() + ZST)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(packed)
        if packed is unsized:
            assert store.plain(hashlib.sha256(plain).hexdigest()) == plain
        else:  # cut short: corrupt, whichever way it is read
            with pytest.raises(CorruptObject):
                store.plain(hashlib.sha256(plain).hexdigest())
    store.close()


def test_blocks_of_stored_lines_are_cut_where_lines_end_whatever_the_pieces():
    import random

    from vlitc.run.store import _blocks

    rng = random.Random(1)
    for _ in range(300):
        pieces, lines = [], []
        for _ in range(rng.randint(0, 6)):
            n = rng.randint(0, 9)
            new = [f'{{"i": {len(lines) + j}, "t": "a\\\\nb"}}\n'.encode() for j in range(n)]
            lines += new
            pieces.append((b"".join(new), n))
        size = rng.randint(1, 12)
        want = [(b"".join(lines[i:i + size]), len(lines[i:i + size])) for i in range(0, len(lines), size)]
        assert list(_blocks(iter(pieces), size)) == want


def test_a_stored_piece_whose_lines_do_not_match_its_count_is_an_error():
    from vlitc.errors import CacheError
    from vlitc.run.store import _blocks

    with pytest.raises(CacheError, match="holds 2 lines where its step entry says 3"):
        list(_blocks(iter([(b"{}\n{}\n", 3)]), 2))


def test_shards_stored_on_the_writers_thread_come_back_in_order_and_a_failure_is_raised(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    try:
        records = [_sample(i) for i in range(95)]
        w = store.writer()
        w.shard_size = 10  # ten shards: more than the writer lets wait
        slow = store.put_shard

        def put_shard(data: bytes, count: int) -> dict:
            if data.startswith(b'{"id":"t/0"'):
                time.sleep(0.05)  # the first shard ends last
            return slow(data, count)

        monkeypatch.setattr(store, "put_shard", put_shard)
        w.write_all(records)
        out = w.close()
        assert [s["count"] for s in out["shards"]] == [10] * 9 + [5]
        assert list(store.read(out)) == records
        one = store.writer()
        one.shard_size = 1_000
        one.write_all(records)
        whole = one.close()
        assert len(whole["shards"]) == 1 and list(store.read(whole)) == records

        def broken(data: bytes, count: int) -> dict:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store, "put_shard", broken)
        with pytest.raises(OSError, match="No space"):  # where a later shard waits for it
            with store.writer() as w:
                w.shard_size = 10
                w.write_all(records)
                w.close()
        with pytest.raises(OSError, match="No space"):  # at the latest where the writer closes
            with store.writer() as w:
                w.shard_size = 10
                w.write_all(records[:15])
                w.close()
        with pytest.raises(ValueError):  # the block's own error, not the storing one
            with store.writer() as w:
                w.shard_size = 10
                w.write_all(records[:15])  # one shard handed over, failing
                raise ValueError("the step failed")
    finally:
        store.close()
