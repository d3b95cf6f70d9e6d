"""Typed runners: one class per step kind, each turning a step and its context into a cache entry.

A runner reads its inputs and writes its outputs through the :class:`~vlitc.run.executor.Executor`
it belongs to (``input``, ``write``, ``store``) and returns the step's entry: ``{"outputs": {name:
output}}`` plus ``files`` for steps that write release files. The executor decides whether a step
runs at all (:mod:`vlitc.run.status`); a runner only runs it.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from vlitc.errors import VlitcError
from vlitc.ops.base import Balance, Exporter, Filter, Op, OpContext, Pool, Report, Source, Task
from vlitc.plan import Step
from vlitc.run import keys
from vlitc.run.fingerprint import item_digest
from vlitc.run.outputs import count_records

if TYPE_CHECKING:
    from vlitc.run.executor import Executor

MEASURE_CHUNK = 512

OpT = TypeVar("OpT", bound=Op)


def op_of(step: Step, family: type[OpT]) -> OpT:
    """The step's op as its family's class: the plan gives every step of a kind an op of the
    kind's family (only ``merge`` has none), which the checker cannot see through ``Step.op``."""
    return cast(OpT, step.op)


class Runner:
    """Runs the steps of one kind."""

    kind: ClassVar[str] = ""

    def __init__(self, ex: Executor):
        self.ex = ex

    def run(self, step: Step, ctx: OpContext) -> dict:
        raise NotImplementedError

    def input(self, step: Step, ref: str) -> Iterator[dict]:
        return self.ex.input(step, ref)

    def write(self, records: Iterator[dict]) -> dict:
        return self.ex.write(records)


RUNNERS: dict[str, type[Runner]] = {}

R = TypeVar("R", bound=type[Runner])


def runner(cls: R) -> R:
    RUNNERS[cls.kind] = cls
    return cls


@runner
class SourceRunner(Runner):
    kind = "source"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return {"outputs": {"main": self.write(op_of(step, Source).load(ctx))}}


@runner
class PoolRunner(Runner):
    kind = "pool"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return {"outputs": {"main": self.write({"template": t} for t in op_of(step, Pool).templates(ctx))}}


@runner
class TaskRunner(Runner):
    kind = "task"

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Task)
        src = op.params.get("source")
        records = self.input(step, f"source:{src}") if isinstance(src, str) else iter(())
        return {"outputs": {"main": self.write(op.run(records, ctx))}}


@runner
class MergeRunner(Runner):
    kind = "merge"

    def run(self, step: Step, ctx: OpContext) -> dict:
        chained = itertools.chain.from_iterable(self.input(step, d) for d in step.deps)
        return {"outputs": {"main": self.write(chained)}}


@runner
class BalanceRunner(Runner):
    kind = "balance"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return {"outputs": {"main": self.write(op_of(step, Balance).run(self.input(step, step.deps[0]), ctx))}}


def in_scope(op: Filter, sample: dict) -> bool:
    """Whether a filter applies to a sample (its ``tasks`` param, when set)."""
    tasks = op.params.get("tasks")
    return not tasks or sample.get("task") in tasks


def _set_stats(sample: dict, label: str, stats: Any) -> None:
    sample.setdefault("meta", {}).setdefault("stats", {})[label] = stats


@runner
class MeasureRunner(Runner):
    """A filter's measurement: stats under ``meta.stats.<label>`` for every sample in scope;
    item-scope stats are cached per sample across builds."""

    kind = "measure"

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Filter)
        samples = self.input(step, step.deps[0])
        if op.scope == "dataset" or not op.cache_items:
            return {"outputs": {"main": self.write(self._measure_dataset(op, samples, ctx))}}
        return {"outputs": {"main": self.write(self._measure_items(op, step, samples, ctx))}}

    def _measure_dataset(self, op: Filter, samples: Iterator[dict], ctx: OpContext) -> Iterator[dict]:
        if op.scope == "item":  # an uncached per-item rule: stream it in chunks
            while chunk := list(itertools.islice(samples, MEASURE_CHUNK)):
                yield from self._measure_all(op, chunk, ctx)
            return
        yield from self._measure_all(op, list(samples), ctx)

    def _measure_all(self, op: Filter, alls: list[dict], ctx: OpContext) -> Iterator[dict]:
        scoped = [s for s in alls if in_scope(op, s)]
        stats = op.measure(scoped, ctx) if scoped else []
        if len(stats) != len(scoped):
            raise VlitcError(f"filter {op.label} returned {len(stats)} stats for {len(scoped)} samples")
        it = iter(stats)
        for s in alls:
            if in_scope(op, s):
                _set_stats(s, op.label, next(it))
            yield s

    def _measure_items(self, op: Filter, step: Step, samples: Iterator[dict], ctx: OpContext) -> Iterator[dict]:
        from vlitc.run.fingerprint import digest

        ex = self.ex
        cache = ex.store.item_cache(f"measure-{op.name}")
        fp = digest({"op": op.name, "version": op.version, "params": step.params,
                     "files": keys.step_files(step, ex.recipe, ex.files, ctx)})
        while chunk := list(itertools.islice(samples, MEASURE_CHUNK)):
            todo, ids = [], []
            with cache.transact():
                hits = [(i, fp + ":" + item_digest(s), None) for i, s in enumerate(chunk)
                        if in_scope(op, s)]
                hits = [(i, k, cache.get(k)) for i, k, _ in hits]
            for i, ikey, hit in hits:
                s = chunk[i]
                if hit is None:
                    todo.append(s)
                    ids.append((i, ikey))
                else:
                    _set_stats(s, op.label, hit)
            if todo:
                stats = op.measure(todo, ctx)
                if len(stats) != len(todo):
                    raise VlitcError(f"filter {op.label} returned {len(stats)} stats for {len(todo)} samples")
                with cache.transact():
                    for (i, ikey), st in zip(ids, stats, strict=True):
                        cache.set(ikey, st)
                        _set_stats(chunk[i], op.label, st)
                ctx.count("measured", len(todo))
            yield from chunk


@runner
class FilterRunner(Runner):
    """A filter's keep decision over the measured stats: kept samples and dropped ones."""

    kind = "filter"

    def run(self, step: Step, ctx: OpContext) -> dict:
        op = op_of(step, Filter)
        scoped_stats = [s["meta"]["stats"][op.label] for s in self.input(step, step.deps[0])
                        if in_scope(op, s)]
        decisions = iter(op.decide(scoped_stats))
        store = self.ex.store
        kept, dropped = store.writer(), store.writer()
        try:
            for s in self.input(step, step.deps[0]):
                reason = next(decisions) if in_scope(op, s) else None
                if reason is None:
                    kept.write(s)
                else:
                    s["meta"]["drop"] = {"filter": op.label, "reason": reason}
                    dropped.write(s)
                    ctx.count("dropped")
        except BaseException:
            kept.abort()
            dropped.abort()
            raise
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
                sha, size = store.put_file(path)
                records = item.get("records") if isinstance(item, dict) else count_records(path)
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
        return self.run_files(ctx, lambda c: op_of(step, Exporter).export(self.input(step, step.deps[0]), c))


@runner
class ReportRunner(FilesRunner):
    kind = "report"

    def run(self, step: Step, ctx: OpContext) -> dict:
        return self.run_files(ctx, lambda c: op_of(step, Report).write(c))
