"""Typed runners: one class per step kind, each turning a step and its context into a cache entry.

A runner reads its inputs and writes its outputs through the :class:`~vlitc.run.executor.Executor`
it belongs to (``input``, ``write``, ``store``) and returns the step's entry: ``{"outputs": {name:
output}}`` plus ``files`` for steps that write release files. The executor decides whether a step
runs at all (:mod:`vlitc.run.status`); a runner only runs it.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import orjson

from vlitc.ops.base import (
    Balance,
    Chosen,
    ChosenParts,
    Exporter,
    Filter,
    Op,
    OpContext,
    Pool,
    Report,
    Source,
    Task,
)
from vlitc.ops.exporters.common import FileExporter
from vlitc.plan import Step
from vlitc.run.outputs import count_records
from vlitc.run.shards import (
    IN_SCOPE,
    SCOPED_IDS,
    Gathered,
    Job,
    export_chunk,
    finish_chunk,
    in_scope,
    measure_all,
    measure_cached,
    measure_chunked,
    merge_chunk,
    raise_chunk_error,
    refinish_chunk,
    run_chunk,
    scoped_features,
    stat_value,
    stats_path,
    write_shard,
)
from vlitc.run.store import SHARD_SIZE, combined_hash, is_view

if TYPE_CHECKING:
    from vlitc.run.executor import Executor

OpT = TypeVar("OpT", bound=Op)


def op_of(step: Step, family: type[OpT]) -> OpT:
    """The step's op as its family's class: the plan gives every step of a kind an op of the
    kind's family (only ``merge`` has none), which the checker cannot see through ``Step.op``."""
    return cast(OpT, step.op)


class Runner:
    """Runs the steps of one kind."""

    kind: ClassVar[str] = ""
    #: whether the step's records are all the garbage it makes (plain, acyclic containers):
    #: the build holds the cycle collector while it runs (not for an op that calls a model)
    acyclic: ClassVar[bool] = False

    def __init__(self, ex: Executor):
        self.ex = ex

    def run(self, step: Step, ctx: OpContext) -> dict:
        raise NotImplementedError

    def input(self, step: Step, ref: str) -> Iterator[dict]:
        return self.ex.input(step, ref)

    def read_for(self, op: Op, output: dict) -> Iterator[dict]:
        """The records of ``output`` as ``op`` reads them: decoded into the fields it declares
        when it declares every field it looks at (:attr:`vlitc.ops.base.Op.projected`)."""
        if op.projected and op.reads:
            return self.ex.store.read_range(output, 0, output["count"], op.reads, project=True)
        return self.ex.store.read(output)

    def write(self, records: Iterator[dict]) -> dict:
        return self.ex.write(records)

    def map(self, step: Step, ctx: OpContext, kind: str, source: dict | list[dict],
            measure_fp: str | None = None) -> dict:
        """Run the step's op over ``source`` (a task's: its inputs, one after another) in chunks
        on the build's engine; the chunks' outputs are written in order, so the output is the
        same bytes as running it inline (a task's as shards the workers stage and store, a
        measure's as a view of ``source`` with the op's stats column)."""
        sources = source if isinstance(source, list) else [source]
        total = {"count": sum(o["count"] for o in sources)}
        job = self.ex.job(step, ctx, kind, measure_fp, sources)
        size = self.ex.chunk_size(total)
        staged = Staged(self.ex) if kind == "task" else None
        if staged is not None:
            job.staging = staged.dir
        view = self.ex.store.view_writer(sources[0], stats_path(job.label)) if kind == "measure" else None
        try:
            chunks = self.ex.chunks(sources[0] if len(sources) == 1 else total)
            for done, ((lo, _hi), res) in enumerate(zip(chunks, self.ex.engine.map(run_chunk, job, chunks),
                                                        strict=True), start=1):
                if res.llm is not None:
                    self.ex.merge_llm(res.llm)
                raise_chunk_error(res)
                if view is not None:
                    view.extend(b"\x01" * res.count, res.values or [])
                elif staged is not None:
                    staged.add(f"{lo}", (res.features or {})["length"])
                merge_chunk(ctx, res)
                ctx.emit({"event": "progress", "step": step.id, "done": done * size,
                          "total": total["count"]})
            if view is not None:
                return view.close()
            assert staged is not None
            return staged.close(job)
        finally:
            if staged is not None:
                staged.remove()

    def measured(self, source: dict, label: str, samples: Iterable[dict]) -> dict:
        """A measure's output: a view of ``source`` (the samples it was given, in order) with
        each sample's ``meta.stats.<label>`` as a column; no body is stored again."""
        view = self.ex.store.view_writer(source, stats_path(label))
        it = iter(samples)
        while values := [stat_value(s, label) for s in itertools.islice(it, SHARD_SIZE)]:
            view.extend(b"\x01" * len(values), values)
        return view.close()


def narrow(a: Any) -> Any:
    """Non-negative integers ``a`` as an int32 array when they fit, else int64: a column of
    lengths, offsets or positions over 10M lines in half the memory."""
    import numpy as np

    a = np.asarray(a)
    if a.dtype == np.int32:
        return a
    return a.astype(np.int32 if not len(a) or int(a.max()) < 2**31 else np.int64)


def _inverse(positions: Any) -> Any:
    """The order that sorts ``positions`` (stably): for a permutation of ``0..n-1`` (a balance's
    release positions) its inverse, made in one pass, without the 64-bit array a sort returns
    (80 MB over 10M lines); a sort otherwise."""
    import numpy as np

    n = len(positions)
    if n and 0 <= int(positions.min()) and int(positions.max()) < n:
        dtype = np.int32 if n < 2**31 else np.int64
        order: Any = np.full(n, -1, dtype=dtype)
        order[positions] = np.arange(n, dtype=dtype)
        if not (order < 0).any():  # every position once: a permutation
            return order
        del order
    return narrow(np.argsort(positions, kind="stable"))


class Staged:
    """A step output whose chunks' lines the workers staged in files (:func:`stage`), each
    line's file, offset and length kept here, and whose shards the workers then cut from those
    files and store (:func:`write_shard`): the build's process never holds the lines."""

    def __init__(self, ex: Executor):
        import numpy as np

        self.ex = ex
        self.dir = tempfile.mkdtemp(dir=ex.store.tmp, prefix="staged-")
        self.names: list[str] = []
        self._parts: list[tuple[Any, Any, Any]] = []  # (file, offset, length) per chunk's lines
        self._positions: list[Any] = []
        self._plain: list[Any] = []  # the lengths of each whole-file chunk, while all are so
        self._np = np

    def add(self, name: str, lengths: Any, positions: Any = None, offsets: Any = None) -> None:
        """The lines chunk file ``name`` holds: their lengths, their offsets when they are not
        the whole file one after another, and their positions in the output when they are not
        its next lines."""
        f = len(self.names)
        self.names.append(name)
        if offsets is None and positions is None and not self._parts:
            # the whole file, as the output's next lines: only the lengths are kept (a task's
            # chunks), narrow when they fit; the shards' runs are cut from them as they go
            self._plain.append(narrow(lengths))
            return
        self._spell_out()
        self._part(f, lengths, offsets)
        if positions is not None:
            self._positions.append(narrow(positions))

    def _spell_out(self) -> None:
        """Give the whole-file chunks added so far their file and offset per line, as every
        other chunk has them."""
        plain, self._plain = self._plain, []
        for f, n in enumerate(plain):
            self._part(f, n)

    def _part(self, f: int, lengths: Any, offsets: Any = None) -> None:
        """Keep file ``f``'s lines as (file, offset, length) columns; without ``offsets`` the
        lines are the whole file, one after another."""
        np = self._np
        lengths = np.asarray(lengths, dtype=np.int64)
        offsets = np.cumsum(lengths) - lengths if offsets is None else np.asarray(offsets, dtype=np.int64)
        # a chunk's file is far below 2 GB: its offsets and lengths in 32 bits, and its number
        # in 16 while there are that few files (the columns of a 10M-sample output are then
        # 10 bytes a line, not 20)
        self._parts.append((np.full(len(lengths), f, dtype=np.uint16 if f < 2**16 else np.int32),
                            narrow(offsets), narrow(lengths)))

    def _plain_shards(self) -> Iterator[tuple]:
        """The shards of whole-file chunks in order: each shard's runs are one per file it
        takes lines from (a file's lines follow each other), made as the shards are cut."""
        return staged_shards(self.dir, self.names, list(enumerate(self._plain)))

    def close(self, job: Job) -> dict:
        """Write the output's shards on the engine (in output order); the output's entry."""
        np = self._np
        if self._plain:
            got = [res.features["shard"] for res in self.ex.engine.map(write_shard, job, self._plain_shards())]
            return {"shards": got, "count": sum(len(n) for n in self._plain),
                    "hash": combined_hash(s["sha256"] for s in got)}
        # one column at a time, its chunks' arrays let go as it is joined (and put back into
        # output order): the chunks' columns and the joined ones are never all held at once
        cols = [list(c) for c in zip(*self._parts, strict=True)] if self._parts else [[], [], []]
        self._parts = []
        order = None
        if self._positions:
            positions = np.concatenate(self._positions)
            self._positions = []
            order = _inverse(positions)
            del positions

        def column(k: int) -> Any:
            col = np.concatenate(cols[k]) if cols[k] else np.zeros(0, dtype=np.int64)
            cols[k] = []
            return col if order is None else col[order]

        files, offsets, lengths = column(0), column(1), column(2)
        order = None
        trim_heap()  # the chunks' arrays, freed: hundreds of small blocks the C heap would keep

        def shards() -> Iterator[tuple]:
            for lo in range(0, len(lengths), SHARD_SIZE):
                yield shard_runs(self.dir, self.names, files[lo:lo + SHARD_SIZE],
                                 offsets[lo:lo + SHARD_SIZE], lengths[lo:lo + SHARD_SIZE])

        got = [res.features["shard"] for res in self.ex.engine.map(write_shard, job, shards())]
        return {"shards": got, "count": int(len(lengths)), "hash": combined_hash(s["sha256"] for s in got)}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def shard_runs(directory: str, names: list[str], files: Any, offsets: Any, lengths: Any) -> tuple:
    """:func:`write_shard`'s chunk for one shard's lines, each ``(file, offset, length)`` in
    ``directory``'s staging files ``names``: runs of lines that follow each other in one file
    are read as one, and the chunk names only the files its runs are in."""
    import numpy as np

    f, o, n = np.asarray(files), np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    run = np.flatnonzero(np.r_[True, (f[1:] != f[:-1]) | (o[1:] != o[:-1] + n[:-1])])
    used, local = np.unique(f[run], return_inverse=True)
    return (directory, [names[k] for k in used.tolist()], local.reshape(-1).astype(np.int32), o[run],
            np.add.reduceat(n, run, dtype=np.int64), len(n))


def cut_shards(directory: str, names: list[str], pieces: Iterable[tuple[Any, Any, Any]]) -> Iterator[tuple]:
    """:func:`write_shard`'s chunks for an output whose lines come as ``pieces`` in order,
    each piece's lines as ``(file, offset, length)`` columns into ``names`` (which may grow
    as the pieces come): shards of :data:`SHARD_SIZE` lines, the last one partial, made as
    the pieces come, so that only the lines of one shard and one piece are held."""
    import numpy as np

    held: list[tuple[Any, Any, Any]] = []
    count = 0
    for f, o, n in pieces:
        at = 0
        while at < len(n):
            take = min(SHARD_SIZE - count, len(n) - at)
            held.append((f[at:at + take], o[at:at + take], n[at:at + take]))
            at, count = at + take, count + take
            if count == SHARD_SIZE:
                yield shard_runs(directory, names, *(np.concatenate(c) for c in zip(*held, strict=True)))
                held, count = [], 0
    if count:
        yield shard_runs(directory, names, *(np.concatenate(c) for c in zip(*held, strict=True)))


RUNNERS: dict[str, type[Runner]] = {}

R = TypeVar("R", bound=type[Runner])
C = TypeVar("C", bound=Chosen | ChosenParts)


def runner(cls: R) -> R:
    RUNNERS[cls.kind] = cls
    return cls


@runner
class SourceRunner(Runner):
    kind = "source"

    def run(self, step: Step, ctx: OpContext) -> dict:
        with self.ex.store.writer() as w:
            for data, n in op_of(step, Source).load_lines(ctx):
                w.write_encoded(data, n)
        return {"outputs": {"main": w.close()}}


@runner
class PoolRunner(Runner):
    kind = "pool"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return {"outputs": {"main": self.write({"template": t} for t in op_of(step, Pool).templates(ctx))}}


def segments(sources: list[dict]) -> list[tuple[int, int]]:
    """The runs of a task's input (``sources`` one after another) that its output's shards
    end with: each stored shard of a source, and :data:`SHARD_SIZE` rows at a time of a view.
    The samples of each run fill shards of :data:`SHARD_SIZE`, the last one partial, so a
    task's shards (and its output's hash, which keys the steps after it) follow from its input
    alone: the same inline and in chunks on any engine, with each chunk's shards stored by the
    worker that made them (no second pass over the lines)."""
    out: list[tuple[int, int]] = []
    start = 0
    for src in sources:
        n = src["count"]
        counts = [s["count"] for s in src["shards"]] if not is_view(src) else \
            [min(SHARD_SIZE, n - lo) for lo in range(0, n, SHARD_SIZE)]
        for c in counts:
            if c:
                out.append((start, start + c))
                start += c
    return out


def _pieces(chunks: list[tuple[int, int]], runs: list[tuple[int, int]]) -> Iterator[list[tuple[int, int, int]]]:
    """Each chunk as the pieces of ``runs`` it holds, ``(lo, hi, run)`` in order."""
    r = 0
    for lo, hi in chunks:
        got = []
        while r < len(runs) and runs[r][0] < hi:
            a, b = runs[r]
            got.append((max(a, lo), min(b, hi), r))
            if b > hi:
                break
            r += 1
        yield got


def staged_shards(directory: str, names: list[str], files: list[tuple[int, Any]]) -> Iterator[tuple]:
    """:func:`write_shard`'s chunks for lines staged one file after another (``(file number,
    line lengths)`` in order): shards of :data:`SHARD_SIZE` lines, the last one partial, each
    as the byte runs it joins (one per file it takes lines from)."""
    import numpy as np

    runs: list[tuple[int, int, int]] = []
    pending = 0

    def shard() -> tuple:
        f, o, n = zip(*runs, strict=True)
        return (directory, names, np.asarray(f, dtype=np.int32), np.asarray(o, dtype=np.int64),
                np.asarray(n, dtype=np.int64), pending)

    for f, lengths in files:
        offset, i = 0, 0
        while i < len(lengths):
            take = min(SHARD_SIZE - pending, len(lengths) - i)
            size = int(lengths[i:i + take].sum(dtype=np.int64))
            runs.append((f, offset, size))
            offset, i, pending = offset + size, i + take, pending + take
            if pending == SHARD_SIZE:
                yield shard()
                runs, pending = [], 0
    if pending:
        yield shard()


@runner
class TaskRunner(Runner):
    """A task: when its op says each record's samples depend on that record alone
    (:meth:`vlitc.ops.base.Task.shardable`), a map step over its source's records, cut by the
    runs of its input (:func:`segments`). An op that calls a model runs over its whole input
    at once instead, so that one window of requests stays in flight across the step (on the
    engine, in chunks whose lines are staged and cut into shards after)."""

    kind = "task"
    acyclic = True

    def run(self, step: Step, ctx: OpContext) -> dict:
        from vlitc.ops.model import ModelOp

        op = op_of(step, Task)
        refs = op.inputs()
        batched = isinstance(op, ModelOp) and op.batched(ctx)  # one batch, not one per chunk
        if refs and op.shardable() and not batched:
            sources = [self.ex.output_of(step, ref) for ref in refs]
            total = {"count": sum(o["count"] for o in sources)}
            if isinstance(op, ModelOp):
                if self.ex.maps(total):
                    return {"outputs": {"main": self.map(step, ctx, "task", sources)}}
            elif self.ex.maps(total):
                return {"outputs": {"main": self.map_segments(step, ctx, op, sources)}}
            else:
                return {"outputs": {"main": self.write_segments(ctx, op, sources)}}
        records = itertools.chain.from_iterable(self.input(step, ref) for ref in refs)
        return {"outputs": {"main": self.write(op.run(records, ctx))}}

    def write_segments(self, ctx: OpContext, op: Task, sources: list[dict]) -> dict:
        """The task run here, a run of its input at a time (:func:`segments`), the input read
        once from start to end."""
        total = sum(o["count"] for o in sources)
        records = itertools.chain.from_iterable(self.ex.store.read(o) for o in sources)
        with self.ex.store.writer() as w:
            for lo, hi in segments(sources):
                run = itertools.islice(records, hi - lo)
                with ctx.progress_from(lo, total):
                    w.write_all(op.run(run, ctx))
                for _rest in run:  # a run the op did not read to its end: the next starts after it
                    pass
                w.cut()
        return w.close()

    def map_segments(self, step: Step, ctx: OpContext, op: Task, sources: list[dict]) -> dict:
        """The task in chunks on the build's engine, each a run of its input or several (or,
        for a small input, a part of one: such parts are staged and their run's shards cut
        from them after), giving the shards :meth:`write_segments` gives."""
        runs = segments(sources)
        total = sum(o["count"] for o in sources)
        chunks = self.ex.chunks({"count": total, "shards": [{"count": b - a} for a, b in runs]})
        job = self.ex.job(step, ctx, "segments", None, sources)
        job.staging = tempfile.mkdtemp(dir=self.ex.store.tmp, prefix="staged-")
        job.shard_size = SHARD_SIZE
        shards: list[list[dict]] = [[] for _ in runs]
        staged: dict[int, list[tuple[int, Any]]] = {}  # a run cut across chunks: its pieces' lines
        names: list[str] = []
        try:
            pieces = list(_pieces(chunks, runs))
            calls = ([(lo, hi, (lo, hi) == runs[r]) for lo, hi, r in p] for p in pieces)
            done = 0
            for p, res in zip(pieces, self.ex.engine.map(run_chunk, job, calls), strict=True):
                raise_chunk_error(res)
                for (_lo, _hi, r), got in zip(p, (res.features or {})["pieces"], strict=True):
                    if got[0] == "shards":
                        shards[r] = got[1]
                    else:
                        staged.setdefault(r, []).append((len(names), got[2]))
                        names.append(got[1])
                merge_chunk(ctx, res)
                done += sum(hi - lo for lo, hi, _r in p)
                ctx.emit({"event": "progress", "step": step.id, "done": done, "total": total})
            if staged:
                cut = [(r, c) for r in sorted(staged) for c in staged_shards(job.staging, names, staged[r])]
                for (r, _c), res in zip(cut, self.ex.engine.map(write_shard, job, (c for _r, c in cut)),
                                        strict=True):
                    shards[r].append(res.features["shard"])
        finally:
            shutil.rmtree(job.staging, ignore_errors=True)
        out = [sh for run in shards for sh in run]
        return {"shards": out, "count": sum(sh["count"] for sh in out),
                "hash": combined_hash(sh["sha256"] for sh in out)}


@runner
class MergeRunner(Runner):
    """The released tasks' samples, one after another: their lines are copied as they are (no
    decoding), and a single input's shards are the merge's own (nothing copied at all)."""

    kind = "merge"
    acyclic = True

    def run(self, step: Step, ctx: OpContext) -> dict:
        outputs = [self.ex.output_of(step, d) for d in step.deps]
        if len(outputs) == 1 and not is_view(outputs[0]):
            return {"outputs": {"main": copy.deepcopy(outputs[0])}}
        with self.ex.store.writer() as w:
            for out in outputs:
                for data, n in self.ex.store.read_chunks(out, SHARD_SIZE):
                    w.write_encoded(data, n)
        return {"outputs": {"main": w.close()}}


@runner
class BalanceRunner(Runner):
    """Balance: a streaming op selects by a first pass over the samples (keeping only their
    keys); the chosen ones are then read again, staged as lines and written in output order.
    When the build's engine spreads work, both passes run in chunks on it: the keys of each
    chunk, then each output-order chunk of chosen samples as the output has them."""

    kind = "balance"
    acyclic = True

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Balance)
        if not op.streams:
            return {"outputs": {"main": self.write(op.run(self.input(step, step.deps[0]), ctx))}}
        import numpy as np

        ex = self.ex
        source = ex.output_of(step, step.deps[0])
        spread = ex.maps(source)
        if spread and op.staged_tag is not None:
            return {"outputs": {"main": self._staged_spread(step, ctx, op, source)}}
        if spread:
            job = ex.job(step, ctx, "keys", sources=[source])

            def chunk_keys() -> Iterator[dict[str, list]]:
                for res in ex.engine.map(run_chunk, job, ex.chunks(source)):
                    raise_chunk_error(res)
                    merge_chunk(ctx, res)
                    yield res.features or {}

            chosen = in_memory(selected(op.select_keys(chunk_keys(), ctx)))
        elif op.staged_tag is not None:
            return {"outputs": {"main": self._staged_inline(step, ctx, op)}}
        else:
            chosen = in_memory(selected(op.select(self.input(step, step.deps[0]), ctx)))
        position = chosen.positions(source["count"])
        if spread:
            return {"outputs": {"main": self._finish_spread(step, ctx, source, chosen, position)}}
        where = np.zeros((len(chosen), 2), dtype=np.int64)  # offset and length in the staging file
        fd, staging = tempfile.mkstemp(dir=ex.store.tmp, prefix="balance-")
        try:
            with open(fd, "w+b") as f:
                offset = 0
                for i, line in ex.store.read_some(source, position >= 0):
                    f.write(line)
                    where[position[i]] = (offset, len(line))
                    offset += len(line)
                f.flush()

                def staged(pos: int) -> bytes:
                    f.seek(int(where[pos, 0]))
                    return f.read(int(where[pos, 1]))

                return {"outputs": {"main": self.write(
                    op.finish(orjson.loads(staged(pos)), tag) for pos, (_i, tag) in enumerate(chosen))}}
        finally:
            os.unlink(staging)

    def _staged_inline(self, step: Step, ctx: OpContext, op: Balance) -> dict:
        """Both passes in the build's process, the first staging every sample finished with the
        usual tag as it reads it: the output is then cut from the staged lines in release
        order, and only the samples chosen with another tag are decoded and finished again."""
        import numpy as np

        usual, finish = cast(str, op.staged_tag), op.finish
        lengths: list[int] = []
        fd, staging = tempfile.mkstemp(dir=self.ex.store.tmp, prefix="balance-")
        try:
            with open(fd, "w+b") as f:
                def staged(samples: Iterator[dict]) -> Iterator[dict]:
                    for s in samples:
                        line = orjson.dumps(finish(s, usual)) + b"\n"
                        f.write(line)
                        lengths.append(len(line))
                        yield s

                chosen = selected(op.select(staged(self.input(step, step.deps[0])), ctx))
                f.flush()
                n = np.asarray(lengths, dtype=np.int64)
                offset = (np.cumsum(n) - n).tolist()
                del lengths[:]
                size, fileno, pread = n.tolist(), f.fileno(), os.pread
                try:  # a choice in parts is read a part at a time, as it iterates
                    with self.ex.store.writer() as w:  # read, not mapped: its pages never count as ours
                        for i, tag in chosen:
                            line = pread(fileno, size[i], offset[i])
                            if tag == usual:
                                w.write_line(line)
                            else:
                                w.write(finish(orjson.loads(line), tag))
                    return w.close()
                finally:
                    if isinstance(chosen, ChosenParts):
                        chosen.close()
        finally:
            os.unlink(staging)

    def _staged_spread(self, step: Step, ctx: OpContext, op: Balance, source: dict) -> dict:
        """Both passes on the engine, the first staging every sample finished with the usual
        tag (:attr:`~vlitc.ops.base.Balance.staged_tag`) beside its keys. When the choice keeps
        the input's order (:class:`~vlitc.ops.base.ChosenParts`), the output's shards are cut
        from the staged lines (:meth:`_cut_chosen`): the build's process never holds a column
        per input sample. Another choice is read again from the source (:meth:`_finish_spread`)."""
        import numpy as np

        ex = self.ex
        usual = cast(str, op.staged_tag)
        staged = Staged(ex)
        try:
            job = ex.job(step, ctx, "keys", sources=[source])
            job.staging, job.finish_as = staged.dir, usual
            chunks = ex.chunks(source)
            lengths = os.path.join(staged.dir, "{}.lengths.npy")  # each chunk's line lengths, until
            # the selection is made: files, not 40 MB of a 10M-sample input held meanwhile

            def chunk_keys() -> Iterator[dict[str, list]]:
                for (lo, _hi), res in zip(chunks, ex.engine.map(run_chunk, job, chunks), strict=True):
                    raise_chunk_error(res)
                    merge_chunk(ctx, res)
                    feats = dict(res.features or {})
                    np.save(lengths.format(lo), narrow(feats.pop("length")))
                    yield feats

            chosen = selected(op.select_keys(chunk_keys(), ctx))
            if not isinstance(chosen, ChosenParts):  # another order: the chosen read again
                return self._finish_spread(step, ctx, source, chosen, chosen.positions(source["count"]))
            try:
                return self._cut_chosen(job, staged.dir, lengths, chosen, usual)
            finally:
                chosen.close()
        finally:
            staged.remove()

    def _cut_chosen(self, job: Job, directory: str, lengths: str, chosen: ChosenParts, usual: str) -> dict:
        """The output's shards, cut from the first pass's staging files in input order: each
        chunk's chosen lines with the usual tag are read where they were staged, and those
        chosen with another tag are first finished again with theirs, on the engine, into a
        file of the chunk's own. The build's process holds the lines of a few chunks and of
        one shard at a time (their files, offsets and lengths)."""
        import numpy as np

        ex = self.ex
        names: list[str] = []
        ahead: deque = deque()  # the chunks whose lines to finish again are on the engine

        unusual = np.asarray([t != usual for t in chosen.tags] or [False], dtype=bool)  # by tag code

        def refinish() -> Iterator[tuple]:
            for lo, _hi, rows, codes in chosen.parts():
                sizes = np.load(lengths.format(lo)).astype(np.int64)  # the build's own file (no pickle)
                os.unlink(lengths.format(lo))
                offsets = np.cumsum(sizes) - sizes
                other = unusual[codes]
                again = rows[other]
                ahead.append((lo, offsets[rows], sizes[rows], other))
                yield (directory, f"{lo}", offsets[again], sizes[again],
                       [chosen.tags[c] for c in codes[other].tolist()], f"{lo}.again")

        def pieces() -> Iterator[tuple[Any, Any, Any]]:
            for res in ex.engine.map(refinish_chunk, job, refinish()):
                lo, offset, size, other = ahead.popleft()
                names.extend((f"{lo}", f"{lo}.again"))
                again = np.asarray((res.features or {})["length"], dtype=np.int64)
                size[other] = again
                offset[other] = np.cumsum(again) - again
                yield np.where(other, len(names) - 1, len(names) - 2).astype(np.int32), offset, size

        got = [res.features["shard"] for res in ex.engine.map(write_shard, job, cut_shards(directory, names, pieces()))]
        return {"shards": got, "count": sum(s["count"] for s in got), "hash": combined_hash(s["sha256"] for s in got)}

    def _finish_spread(self, step: Step, ctx: OpContext, source: dict, chosen: Chosen,
                       position: Any) -> dict:
        """The second pass on the engine: each chunk of the source stages its chosen samples as
        the output has them, then the output's shards are cut from the staged lines in release
        order (:class:`Staged`)."""
        import numpy as np

        ex = self.ex
        tags = sorted(set(chosen.tags[c] for c in np.unique(chosen.code).tolist()))
        codes = chosen.codes(source["count"], tags)
        staged = Staged(ex)
        try:
            job = ex.job(step, ctx, "finish", sources=[source])
            chunks = ((lo, hi, position[lo:hi], codes[lo:hi], tags, staged.dir) for lo, hi in ex.chunks(source))
            for (lo, _hi), res in zip(ex.chunks(source), ex.engine.map(finish_chunk, job, chunks), strict=True):
                feats = res.features or {}
                staged.add(f"{lo}", feats["length"], feats["position"])
            return staged.close(job)
        finally:
            staged.remove()


def in_memory(chosen: Chosen | ChosenParts) -> Chosen:
    """A balance's choice as one :class:`Chosen`, for the paths that hold it whole."""
    if isinstance(chosen, ChosenParts):
        try:
            return chosen.chosen()
        finally:
            chosen.close()
    return chosen


def selected(chosen: C) -> C:
    """A balance's selection, after the memory its first pass freed (a 10M-sample input's
    keys: several hundred MB, most of it kept by the C heap) goes back to the system, before
    the second pass holds more."""
    trim_heap()
    return chosen


def trim_heap() -> None:
    """:func:`vlitc.run.executor.trim_heap` (looked up when called: the executor imports this
    module)."""
    from vlitc.run import executor

    executor.trim_heap()


@runner
class MeasureRunner(Runner):
    """A filter's measurement: stats under ``meta.stats.<label>`` for every sample in scope,
    stored as a column of its input's view; item-scope stats are cached per sample across
    builds, and item-scope measures are map steps."""

    kind = "measure"
    acyclic = True

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Filter)
        source = self.ex.output_of(step, step.deps[0])
        if op.scope == "dataset" and op.streams:
            return {"outputs": {"main": self._measure_streamed(step, op, ctx)}}
        if op.scope == "dataset":
            samples = measure_all(op, list(self.input(step, step.deps[0])), ctx)
            return {"outputs": {"main": self.measured(source, op.label, samples)}}
        fp = None
        if op.cache_items:
            from vlitc.run.measures import item_fingerprint

            fp = item_fingerprint(op, step, self.ex.recipe, self.ex.files, ctx)
        from vlitc.ops.model import ModelOp

        batched = isinstance(op, ModelOp) and op.batched(ctx)  # one batch, not one per chunk
        if op.shardable() and not batched and self.ex.maps(source):
            return {"outputs": {"main": self.map(step, ctx, "measure", source, fp)}}
        samples = self.input(step, step.deps[0])
        if fp is None:
            return {"outputs": {"main": self.measured(source, op.label, measure_chunked(op, samples, ctx))}}
        cache = self.ex.store.item_cache(f"measure-{op.name}")
        return {"outputs": {"main": self.measured(source, op.label,
                                                  measure_cached(op, samples, ctx, cache, fp))}}

    def _measure_streamed(self, step: Step, op: Filter, ctx: OpContext) -> dict:
        """Pass 1: every chunk's features (through the engine when it spreads), gathered on
        disk with which samples are in scope and their ids; the op measures them all; pass 2
        gives each sample in scope its stats in the view's column, without reading a body."""
        import numpy as np

        ex = self.ex
        source = ex.output_of(step, step.deps[0])
        workdir = Path(tempfile.mkdtemp(dir=ex.store.tmp, prefix="features-"))
        try:
            gathered = Gathered(workdir, spill=(SCOPED_IDS,))
            if ex.maps(source):
                job = ex.job(step, ctx, "features", sources=[source])
                for res in ex.engine.map(run_chunk, job, ex.chunks(source)):
                    raise_chunk_error(res)
                    merge_chunk(ctx, res)
                    gathered.add(res.features or {})
            else:
                samples = self.read_for(op, source)
                while chunk := list(itertools.islice(samples, ex.execution.chunk)):
                    gathered.add(scoped_features(op, chunk, ctx))
            features = gathered.close()
            in_scope_rows = features.pop(IN_SCOPE, np.zeros(0, dtype=bool))
            id_parts = features.pop(SCOPED_IDS, iter(()))
            stat = op.measure_features(features, ctx)
            del features  # the signatures and hashes: the stats are made
            view = ex.store.view_writer(source, stats_path(op.label))
            # the rows of the samples in scope, in order (none held when every sample is)
            rows = None if in_scope_rows.all() else narrow(np.flatnonzero(in_scope_rows))
            i = row = 0  # samples in scope given their stats; rows of the source given
            for part in id_parts:  # one chunk's ids at a time
                ids = orjson.loads(part)
                if not ids:
                    continue
                upto = i + len(ids) if rows is None else int(rows[i + len(ids) - 1]) + 1
                values = [b""] * (upto - row)
                last: Any = None  # the stats given last, and their encoding
                line = b""
                where = range(i, i + len(ids)) if rows is None else rows[i:i + len(ids)].tolist()
                for k, (sid, at) in enumerate(zip(ids, where, strict=True)):
                    value = stat(i + k, sid)
                    if value is not last:
                        last, line = value, orjson.dumps(value)
                    values[at - row] = line
                view.extend(b"\x01" * len(values), values)
                i, row = i + len(ids), upto
            rest = len(in_scope_rows) - row  # rows out of scope after the last in scope
            view.extend(b"\x01" * rest, [b""] * rest)
            return view.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@runner
class FilterRunner(Runner):
    """A filter's keep decision over the measured stats: views of its input that hold the kept
    samples and the dropped ones (with their ``meta.drop`` reasons as a column)."""

    kind = "filter"
    acyclic = True

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Filter)
        source = self.ex.output_of(step, step.deps[0])
        store = self.ex.store
        rows: Iterator[tuple[bool, Any]]  # (in scope, its stats) per sample
        if op.params.get("tasks"):  # which samples are in scope: their bodies say
            rows = ((True, s["meta"]["stats"][op.label]) if in_scope(op, s) else (False, None)
                    for s in store.read(source))
        else:  # every sample is in scope: the stats column alone, no body is read
            rows = ((True, v) for v in store.column(source, stats_path(op.label)))
        if type(op).decide is Filter.decide:  # a per-sample rule: one pass, no list of stats
            keep = op.keep
            reasons: Iterator[str | None] = (keep(v) if scoped else None for scoped, v in rows)
        else:  # a dataset-wide rule (a top fraction) sees every stat first
            listed = list(rows)
            decided = iter(op.decide([v for scoped, v in listed if scoped]))
            reasons = (next(decided) if scoped else None for scoped, _v in listed)
        kept, dropped = store.view_writer(source), store.view_writer(source, ["meta", "drop"])
        flags, marks = bytearray(), list[bytes]()
        n_dropped = 0

        def flush() -> None:
            kept.extend(bytes(flags))
            dropped.extend(bytes(1 - f for f in flags), marks)
            flags.clear()
            marks.clear()

        for reason in reasons:
            if reason is None:
                flags.append(1)
                marks.append(b"")
            else:
                flags.append(0)
                marks.append(orjson.dumps({"filter": op.label, "reason": reason}))
                n_dropped += 1
            if len(flags) >= SHARD_SIZE:
                flush()
        flush()
        if n_dropped:
            ctx.count("dropped", n_dropped)
        return {"outputs": {"main": kept.close(), "dropped": dropped.close()}}


class FilesRunner(Runner):
    """Steps that write files (exports, the report) into a staging folder; the files go into the
    object store and the release lists them."""

    def run_files(self, ctx: OpContext, call: Callable[[OpContext], list]) -> dict:
        store = self.ex.store
        staging = Path(tempfile.mkdtemp(dir=store.tmp, prefix="out-"))
        try:
            ctx.out_dir = staging
            written = call(ctx)
            files: list[dict[str, Any]] = []
            for item in written:
                rel = item["path"] if isinstance(item, dict) else str(item)
                path = staging / rel
                if isinstance(item, dict):
                    records = item.get("records")
                elif rel in ctx.file_records:  # the op counted them as it wrote
                    records = ctx.file_records[rel]
                else:
                    records = count_records(path)
                sha, size = store.put_file(path, move=True)  # the staging folder goes after
                files.append({"path": rel, "sha256": sha, "size": size, "records": records})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {"outputs": {"main": {"shards": [], "count": sum(f["records"] or 0 for f in files),
                                     "hash": "+".join(f["sha256"] for f in files)}},
                "files": files}


@runner
class ExportRunner(FilesRunner):
    kind = "export"

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Exporter)
        source = self.ex.output_of(step, step.deps[0])
        if isinstance(op, FileExporter) and op.shardable() and self.ex.maps(source):
            return self.run_files(ctx, lambda c: op.write_parts(self.parts(step, c, source), c))
        return self.run_files(ctx, lambda c: op.export(self.read_for(op, source), c))

    def parts(self, step: Step, ctx: OpContext, source: dict) -> Iterator[Any]:
        """The export's samples prepared in chunks on the build's engine, in order."""
        job = self.ex.job(step, ctx, "export", sources=[source])
        chunks = self.ex.chunks(source)
        for (_lo, hi), res in zip(chunks, self.ex.engine.map(export_chunk, job, chunks), strict=True):
            raise_chunk_error(res)
            merge_chunk(ctx, res)
            ctx.emit({"event": "progress", "step": step.id, "done": hi, "total": source["count"]})
            yield res.part


@runner
class ReportRunner(FilesRunner):
    kind = "report"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return self.run_files(ctx, lambda c: op_of(step, Report).write(c))
