"""Shard functions: what a map step does to one chunk of records, in whatever process runs it.

:func:`run_chunk` takes a :class:`Job` (everything a step's op needs, as plain picklable data:
the op's registered name and params, the context's fields, the cache directory, the outputs the
op may read, the output it maps over) and a chunk, a range of that output's records, which it
reads from the cache itself (the build's process never decompresses or sends the records); it
returns the chunk's output as JSON-lines bytes, encoded exactly as the cache's shard writer
encodes records (a measure: its stats column alone), plus the counters, notes and warnings the
op recorded. The same functions run inline, in a local process pool and as Ray
tasks, so a step's output does not depend on where it ran.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from vlitc.errors import BudgetExceeded, GenerationError, UserError, VlitcError
from vlitc.ops.base import (
    MEASURE_CHUNK,
    Balance,
    Filter,
    ItemCache,
    OpContext,
    Task,
    cycle_collector_off,
)


def in_scope(op: Filter, sample: dict) -> bool:
    """Whether a filter applies to a sample (its ``tasks`` param, when set)."""
    tasks = op.params.get("tasks")
    return not tasks or sample.get("task") in tasks


def stats_path(label: str) -> list[str]:
    """Where a filter's stats lie in a sample (a column of a measure's view)."""
    return ["meta", "stats", label]


def set_stats(sample: dict, label: str, stats: Any) -> None:
    sample.setdefault("meta", {}).setdefault("stats", {})[label] = stats


def stat_value(sample: dict, label: str) -> bytes:
    """A measured sample's ``meta.stats.<label>`` encoded for its column (``b""``: none)."""
    stats = (sample.get("meta") or {}).get("stats") or {}
    return orjson.dumps(stats[label]) if label in stats else b""


def measure_all(op: Filter, alls: list[dict], ctx: OpContext) -> Iterator[dict]:
    """Measure every sample in scope in one call; samples out of scope pass unchanged."""
    scoped = [s for s in alls if in_scope(op, s)]
    stats = op.measure(scoped, ctx) if scoped else []
    if len(stats) != len(scoped):
        raise VlitcError(f"filter {op.label} returned {len(stats)} stats for {len(scoped)} samples")
    it = iter(stats)
    for s in alls:
        if in_scope(op, s):
            set_stats(s, op.label, next(it))
        yield s


def measure_chunked(op: Filter, samples: Iterable[dict], ctx: OpContext) -> Iterator[dict]:
    """An uncached item-scope rule, :data:`MEASURE_CHUNK` samples per call."""
    it = iter(samples)
    while chunk := list(itertools.islice(it, MEASURE_CHUNK)):
        yield from measure_all(op, chunk, ctx)


def measure_cached(op: Filter, samples: Iterable[dict], ctx: OpContext, cache: Any, fp: str) -> Iterator[dict]:
    """An item-scope measure with each sample's stats cached under ``fp:<sample digest>``
    (failed model calls are never stored: see :mod:`vlitc.run.measures`)."""
    from vlitc.run.measures import measure_items

    return measure_items(op, iter(samples), lambda s: in_scope(op, s), cache, fp, ctx)


#: what :func:`scoped_features` adds to a chunk's features: which records are in the filter's
#: scope, and the ids of those (a JSON list per chunk)
IN_SCOPE, SCOPED_IDS = "_in_scope", "_scoped_ids"


def scoped_features(op: Filter, records: Iterable[dict], ctx: OpContext) -> dict[str, Any]:
    """A streamed dataset-scope filter's features of one chunk (of its samples in scope), with
    which records are in scope and their ids: what its measure's second pass needs to give each
    record its stats without reading the records again."""
    import numpy as np

    records = list(records)
    mask = np.fromiter((in_scope(op, s) for s in records), dtype=bool, count=len(records))
    scoped = [s for s, m in zip(records, mask.tolist(), strict=True) if m]
    feats = dict(op.features(scoped, ctx))
    feats[IN_SCOPE] = mask
    feats[SCOPED_IDS] = [orjson.dumps([s["id"] for s in scoped])]
    return feats


@dataclass
class Job:
    """One map step, as plain data a worker process can rebuild it from."""

    kind: str  # task | segments (a task cut by its input's runs) | measure | features | keys
    # (balance) | finish (balance)
    key: str  # the step key (a worker keeps one op per key)
    family: str
    op: str
    params: dict
    label: str
    seed: int
    recipe_dir: str
    step_id: str
    store: str  # the cache directory
    recipe: dict = field(default_factory=dict)
    image_roots: dict[str, str] = field(default_factory=dict)
    generators: dict[str, dict] = field(default_factory=dict)
    inputs: dict[str, dict] = field(default_factory=dict)  # step id -> its output (shard list)
    sources: list[dict] = field(default_factory=list)  # the outputs the chunks range over, in turn
    staging: str = ""  # a folder: a task's chunks stage their lines there (see Staged)
    shard_size: int = 0  # a task's chunks cut by its input's runs: the lines of a stored shard
    finish_as: str | None = None  # balance's keys pass: stage every record finished with this tag
    locations: dict[str, Any] = field(default_factory=dict)  # recipe string -> Location
    extra_items: int = 0
    measure_fp: str | None = None  # item-scope measures that cache per sample
    llm: Any = None  # a vlitc.llm.fanout.LLMJob: the step calls a model from its workers


@dataclass
class ChunkResult:
    lines: bytes = b""
    count: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: tuple[int, str] | None = None  # (exit code, message) of a VlitcError
    error_kind: str = ""  # its class, when the build re-raises it as such (BudgetExceeded, ...)
    features: dict[str, Any] | None = None  # a streamed dataset-scope filter's chunk features
    values: list[bytes] | None = None  # a measure's stats per record, encoded (its view's column;
    # a measure's chunk returns these alone, not the records)
    llm: dict | None = None  # what the chunk's LLM session counted (vlitc.llm.fanout.report)
    part: Any = None  # an export's run of samples, prepared (vlitc.ops.exporters.common.ExportPart)


_WORKER: dict[str, Any] = {}  # per process: step key -> (op, store)


def _prepared(job: Job) -> tuple[Any, Any]:
    hit = _WORKER.get(job.key)
    if hit is None:
        from vlitc.ops import registry
        from vlitc.run.store import Store

        forget_prepared()  # one step at a time per worker
        op = registry.get(job.family, job.op)(job.params, label=job.label)
        hit = _WORKER[job.key] = (op, Store(Path(job.store)))
    return hit


def forget_prepared() -> None:
    """Close the op and cache store this process keeps for the map step it ran last (a build's
    own process runs chunks while Ray starts: its store holds the cache folder's lock)."""
    for _op, store in _WORKER.values():
        store.close()
    _WORKER.clear()


def job_context(job: Job, store: Any, client: Any = None) -> OpContext:
    def inputs(ref: str) -> Iterator[dict]:
        if ref not in job.inputs:
            raise VlitcError(f"step {job.step_id} read {ref!r}, which is not one of its inputs")
        return cast(Iterator[dict], store.read(job.inputs[ref]))

    return OpContext(
        seed=job.seed, recipe_dir=Path(job.recipe_dir), step_id=job.step_id,
        image_roots={k: Path(v) for k, v in job.image_roots.items()}, generators=job.generators,
        recipe=job.recipe, extra_items=job.extra_items, _item_cache=store.item_cache, _row_store=store.row_store,
        _inputs=inputs, _locate=job.locations.get, _client=client)


class Gathered:
    """The features of every chunk, in order: arrays appended to files in ``workdir`` and
    memory-mapped at the end (so a million signatures stay on disk), lists concatenated; the
    lists of byte strings named in ``spill`` are appended to a file too, and given back as an
    iterator over their items, read as it goes (a chunk's ids, until a second pass takes them)."""

    def __init__(self, workdir: Path, spill: tuple[str, ...] = ()):
        self.dir = workdir
        self._files: dict[str, Any] = {}
        self._shape: dict[str, tuple[Any, tuple[int, ...], int]] = {}
        self._lists: dict[str, list] = {}
        self._spill = {name: open(workdir / f"{name}.items", "w+b") for name in spill}  # noqa: SIM115

    def add(self, features: dict[str, Any]) -> None:
        import numpy as np

        for name, value in features.items():
            if name in self._spill:
                f = self._spill[name]
                for item in value:
                    f.write(len(item).to_bytes(8, "little"))
                    f.write(item)
            elif isinstance(value, np.ndarray):
                if name not in self._files:
                    self._files[name] = open(self.dir / f"{name}.bin", "wb")  # noqa: SIM115 (closed in close)
                    self._shape[name] = (value.dtype, value.shape[1:], 0)
                dtype, trail, n = self._shape[name]
                self._files[name].write(np.ascontiguousarray(value, dtype=dtype).tobytes())
                self._shape[name] = (dtype, trail, n + len(value))
            else:
                self._lists.setdefault(name, []).extend(value)

    def close(self) -> dict[str, Any]:
        import numpy as np

        out: dict[str, Any] = dict(self._lists)
        for name, f in self._files.items():
            f.close()
            dtype, trail, n = self._shape[name]
            out[name] = (np.memmap(self.dir / f"{name}.bin", dtype=dtype, mode="r", shape=(n, *trail))
                         if n else np.zeros((0, *trail), dtype=dtype))
        self._files = {}
        for name, f in self._spill.items():
            out[name] = _spilled(f)
        self._spill = {}
        return out


def _spilled(f: Any) -> Iterator[bytes]:
    """The items :class:`Gathered` wrote to ``f``, in order (``f`` is closed at the end)."""
    with f:
        f.flush()
        f.seek(0)
        while head := f.read(8):
            yield f.read(int.from_bytes(head, "little"))


def encode(records: Iterable[dict]) -> tuple[bytes, int]:
    """JSON lines as the cache's shard writer writes them, and how many."""
    lines = [orjson.dumps(r) + b"\n" for r in records]
    return b"".join(lines), len(lines)


def read_chunk(store: Any, job: Job, lo: int, hi: int, fields: Any = None,
               project: bool = False) -> Iterator[dict]:
    """The records ``lo`` to ``hi`` of the job's sources taken one after another (``fields``,
    ``project``: see :meth:`vlitc.run.store.Store.read_range`)."""
    start = 0
    for out in job.sources:
        n = out["count"]
        if start < hi and start + n > lo:
            yield from store.read_range(out, max(lo - start, 0), min(hi - start, n), fields, project)
        start += n


def run_chunk(job: Job, chunk: tuple[int, int]) -> ChunkResult:
    """Run a map step's op over one chunk of its sources: the records ``lo`` to ``hi`` of
    ``job.sources`` one after another, read from the cache by the process that runs the chunk (an op that calls a
    model through an LLM session of the chunk's own, sharing the build's limits, budget and
    store)."""
    op, store = _prepared(job)
    if job.llm is None:
        with cycle_collector_off():  # a chunk's records are acyclic: no collection walks them
            return _run_chunk(job, op, store, chunk, None)
    from vlitc.llm import fanout

    session = job.llm.open()
    try:
        res = _run_chunk(job, op, store, chunk, session.client)
    finally:
        session.close()
    res.llm = fanout.report(session)
    return res


def _run_chunk(job: Job, op: Any, store: Any, chunk: tuple[int, int], client: Any) -> ChunkResult:
    ctx = job_context(job, store, client)
    try:  # the keys of balance and a dataset filter's features look at the fields they declare
        whole = job.kind == "keys" and job.finish_as is not None  # staged as well: every field
        fields = op.reads if job.kind in ("keys", "features") and op.reads and not whole else None
        if job.kind == "segments":
            return _segments(job, cast(Task, op), store, cast(list, chunk), ctx)
        records = read_chunk(store, job, *chunk, fields=fields, project=op.projected and fields is not None)
        if job.kind == "features":
            return ChunkResult(counters=ctx.counters, notes=ctx.notes, warnings=ctx.warnings,
                               features=scoped_features(cast(Filter, op), records, ctx))
        if job.kind == "keys":
            balance, recs = cast(Balance, op), list(records)
            keys = balance.keys(recs, ctx)
            if whole:
                tag, finish = cast(str, job.finish_as), balance.finish
                keys["length"] = stage(job.staging, f"{chunk[0]}",
                                       [orjson.dumps(finish(r, tag)) + b"\n" for r in recs])
            return ChunkResult(counters=ctx.counters, notes=ctx.notes, warnings=ctx.warnings,
                               features=keys)
        if job.kind == "task":
            out = cast(Task, op).run(records, ctx)
        elif job.measure_fp is not None:
            cache: ItemCache = store.item_cache(f"measure-{op.name}")
            out = measure_cached(op, records, ctx, cache, job.measure_fp)
        else:
            out = measure_chunked(op, records, ctx)
        if job.kind == "measure":  # the stats column alone: the bodies are the source's
            values = [stat_value(s, job.label) for s in out]
            return ChunkResult(b"", len(values), ctx.counters, ctx.notes, ctx.warnings, values=values)
        if job.staging:  # staged for the build to cut shards from (:func:`write_shard`)
            lines = [orjson.dumps(r) + b"\n" for r in out]
            return ChunkResult(b"", len(lines), ctx.counters, ctx.notes, ctx.warnings,
                               features={"length": stage(job.staging, f"{chunk[0]}", lines)})
        data, n = encode(out)
    except VlitcError as e:  # its text crosses the process boundary, not its class
        return ChunkResult(counters=ctx.counters, notes=ctx.notes, warnings=ctx.warnings,
                           error=(e.exit_code, str(e)), error_kind=type(e).__name__)
    return ChunkResult(data, n, ctx.counters, ctx.notes, ctx.warnings)


def _segments(job: Job, op: Task, store: Any, pieces: list[tuple[int, int, bool]],
              ctx: OpContext) -> ChunkResult:
    """A task's chunk cut by the runs of its input (:func:`vlitc.run.runners.segments`): the
    samples of each piece ``(lo, hi, whole)``, stored here as the shards of a whole run (each
    of ``job.shard_size`` lines, the last partial, as the build's shard writer cuts them), or
    staged (:func:`stage`) for the build to join with the run's other pieces, in other chunks.
    The result's features list, per piece, ``("shards", entries)`` or ``("staged", name,
    lengths)``."""
    done: list[tuple] = []
    count = 0
    size = job.shard_size
    for lo, hi, whole in pieces:
        lines = [orjson.dumps(s) + b"\n" for s in op.run(read_chunk(store, job, lo, hi), ctx)]
        count += len(lines)
        if whole:
            done.append(("shards", [store.put_shard(b"".join(lines[i:i + size]), min(size, len(lines) - i))
                                    for i in range(0, len(lines), size)]))
        else:
            done.append(("staged", f"{lo}", stage(job.staging, f"{lo}", lines)))
        del lines
    return ChunkResult(count=count, counters=ctx.counters, notes=ctx.notes, warnings=ctx.warnings,
                       features={"pieces": done})


def export_chunk(job: Job, chunk: tuple[int, int]) -> ChunkResult:
    """An export's samples ``lo`` to ``hi``, read from the cache by the process that runs the
    chunk, selected, validated and encoded as its files hold them (:meth:`vlitc.ops.exporters.
    common.FileExporter.prepare`); the build writes them in order."""
    from vlitc.ops.exporters.common import FileExporter

    op, store = _prepared(job)
    exporter = cast(FileExporter, op)
    ctx = job_context(job, store)
    try:
        with exporter.encoding(ctx), cycle_collector_off():
            part = exporter.prepare(read_chunk(store, job, *chunk, exporter.reads, exporter.projected), ctx)
    except VlitcError as e:
        return ChunkResult(counters=ctx.counters, notes=ctx.notes, warnings=ctx.warnings,
                           error=(e.exit_code, str(e)), error_kind=type(e).__name__)
    return ChunkResult(count=len(part.items), counters=ctx.counters, notes=ctx.notes,
                       warnings=ctx.warnings, part=part)


def stage(directory: str, name: str, lines: list[bytes]) -> Any:
    """Write a chunk's output lines to ``directory/name`` (a staging file of the step) and
    return their lengths, so the build can cut shards out of the staged bytes by offset."""
    import numpy as np

    from vlitc.paths import atomic_write

    atomic_write(Path(directory) / name, b"".join(lines))
    return np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))


def finish_chunk(job: Job, chunk: tuple[int, int, Any, Any, list[str], str]) -> ChunkResult:
    """Balance's second pass over one chunk of its source (records ``lo`` to ``hi``): each
    chosen record (``position`` >= 0, its release position) as the output has it
    (:meth:`vlitc.ops.base.Balance.finish` with its tag), encoded and staged in ``directory``;
    the result's features say the positions and line lengths staged."""
    import numpy as np

    op, store = _prepared(job)
    lo, hi, position, codes, tags, directory = chunk
    finish = cast(Balance, op).finish
    lines, where = [], []
    with cycle_collector_off():
        for rec, pos, code in zip(read_chunk(store, job, lo, hi), position.tolist(), codes.tolist(),
                                  strict=True):
            if pos >= 0:
                lines.append(orjson.dumps(finish(rec, tags[code])) + b"\n")
                where.append(pos)
    lengths = stage(directory, f"{lo}", lines)
    return ChunkResult(count=len(lines), features={"position": np.asarray(where, dtype=np.int64),
                                                   "length": lengths})


def refinish_chunk(job: Job, chunk: tuple[str, str, Any, Any, list[str], str]) -> ChunkResult:
    """Balance's second pass where its first staged the records (:attr:`vlitc.ops.base.Balance.
    staged_tag`): the staged lines ``(offset, length)`` of file ``name`` that were chosen with
    another tag, finished again with theirs and staged in ``out``; the result's features say
    their line lengths."""
    import mmap

    op, _store = _prepared(job)
    directory, name, offsets, lengths, tags, out = chunk
    finish = cast(Balance, op).finish
    with open(Path(directory) / name, "rb") as fh, \
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m, cycle_collector_off():
        lines = [orjson.dumps(finish(orjson.loads(m[o:o + n]), tag)) + b"\n"
                 for o, n, tag in zip(offsets.tolist(), lengths.tolist(), tags, strict=True)]
    return ChunkResult(count=len(lines), features={"length": stage(directory, out, lines)})


def write_shard(job: Job, chunk: tuple[str, list[str], Any, Any, Any, int]) -> ChunkResult:
    """One shard of a staged output: its ``count`` lines are the byte runs ``(file, offset,
    length)`` of the staging files in ``directory``, joined in order, hashed and stored
    compressed as the cache's shard writer stores a shard; the result's features hold the
    shard's entry."""
    import mmap

    _op, store = _prepared(job)
    directory, names, files, offsets, lengths, count = chunk
    maps: dict[int, mmap.mmap] = {}
    try:
        for f in set(files.tolist()):  # a file a run lies in holds a line at least
            with open(Path(directory) / names[f], "rb") as fh:
                maps[f] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        data = b"".join(maps[f][o:o + n] for f, o, n in zip(files.tolist(), offsets.tolist(),
                                                             lengths.tolist(), strict=True))
    finally:
        for m in maps.values():
            m.close()
    shard = store.put_shard(data, count)
    return ChunkResult(count=count, features={"shard": shard})


def merge_chunk(ctx: OpContext, result: ChunkResult) -> None:
    """Add a chunk's counters, notes and warnings to the step's context."""
    from vlitc.ops.model import FAILED, MAX_LISTED

    for name, n in result.counters.items():
        ctx.count(name, n)
    notes = dict(result.notes)
    if FAILED in notes and FAILED in ctx.notes:  # the items whose model calls failed, in order
        notes[FAILED] = (ctx.notes[FAILED] + notes[FAILED])[:MAX_LISTED]
    ctx.notes.update(notes)
    for message in result.warnings:
        ctx.warn(message)


def raise_chunk_error(result: ChunkResult) -> None:
    if result.error is not None:
        code, message = result.error
        plain = {"BudgetExceeded": BudgetExceeded, "GenerationError": GenerationError}
        raise plain.get(result.error_kind, UserError if code == 2 else VlitcError)(message)
