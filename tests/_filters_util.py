"""Helpers for the filter tests: literal samples and a bare context."""

from __future__ import annotations

from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.records import sample


def qa(*pairs: str, task: str = "t", sid: str = "s", image: dict | None = None, **meta) -> dict:
    """A sample from alternating user/assistant texts."""
    turns = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(pairs)]
    return sample(sid, task, turns, image=image, meta=meta)


def ctx(tmp_path: Path | None = None, **kw) -> OpContext:
    return OpContext(seed=1, recipe_dir=tmp_path or Path("."), **kw)


def run(flt, samples: list[dict], context: OpContext | None = None) -> tuple[list[dict], list]:
    """Measure then decide, as the executor does: (stats, decisions)."""
    stats = flt.measure(samples, context or ctx())
    return stats, flt.decide(stats)


class MemoryCache(dict):
    """An in-memory stand-in for ``ctx.item_cache(ns)`` with hit/miss bookkeeping."""

    def __init__(self):
        super().__init__()
        self.sets = 0

    def set(self, key, value):
        self.sets += 1
        self[key] = value


def caching_ctx(tmp_path: Path, **kw) -> tuple[OpContext, dict[str, MemoryCache]]:
    caches: dict[str, MemoryCache] = {}

    def get(ns: str) -> MemoryCache:
        return caches.setdefault(ns, MemoryCache())

    return OpContext(seed=1, recipe_dir=tmp_path, _item_cache=get, **kw), caches
