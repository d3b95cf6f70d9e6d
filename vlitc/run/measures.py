"""Item-scope measurements with the per-item cache: each sample's stats are looked up by
(filter, version, measure params, files, sample digest); only misses are measured, as they
stream past (``Filter.measure_stream``), and only real measurements are stored: the stats of an
item whose model call failed (:func:`vlitc.ops.model.is_failed`) are neither stored nor served,
so the next build measures that item again, even a cached one from an older build."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from vlitc.ops.base import Filter, Measuring, OpContext
from vlitc.ops.model import is_failed
from vlitc.run.fingerprint import item_digest

WRITE_BATCH = 256  # stats stored per transaction


def item_fingerprint(op: Filter, step: Any, recipe: Any, files: Any, ctx: OpContext) -> str:
    """What an item-scope measure's cached stats are keyed by besides the sample's digest:
    the filter, its version, its measure params and the files it reads (the build and
    ``vlitc plan`` compute it alike)."""
    from vlitc.run import keys
    from vlitc.run.fingerprint import digest

    return digest({"op": op.name, "version": op.version, "params": step.params,
                   "files": keys.step_files(step, recipe, files, ctx)})


def cache_key(fp: str, sample: dict) -> str:
    """The per-item cache key of ``sample``'s stats under fingerprint ``fp``."""
    return fp + ":" + item_digest(sample)


def measure_items(op: Filter, samples: Iterator[dict], in_scope: Callable[[dict], bool],
                  cache: Any, fp: str, ctx: OpContext) -> Iterator[dict]:
    """The samples in order, each in scope with ``meta.stats[op.label]``."""
    def lookups() -> Iterator[Measuring]:
        for s in samples:
            if not in_scope(s):
                yield Measuring(s, todo=False)
                continue
            key = cache_key(fp, s)
            hit = cache.get(key)
            if hit is not None and not is_failed(hit):
                yield Measuring(s, hit, todo=False, key=key)
            else:
                yield Measuring(s, key=key)

    writes: list[tuple[str, dict]] = []
    measured = 0
    try:
        for m in op.measure_stream(lookups(), ctx):
            if m.todo:
                measured += 1
                if m.stats is not None and not is_failed(m.stats):
                    writes.append((m.key, m.stats))
                    if len(writes) >= WRITE_BATCH:
                        _flush(cache, writes)
            if m.stats is not None:
                m.sample.setdefault("meta", {}).setdefault("stats", {})[op.label] = m.stats
            yield m.sample
    finally:
        _flush(cache, writes)
        if measured:
            ctx.count("measured", measured)


def _flush(cache: Any, writes: list[tuple[str, dict]]) -> None:
    if not writes:
        return
    with cache.transact():  # one commit for the batch, not one per item
        for key, stats in writes:
            cache.set(key, stats)
    writes.clear()
