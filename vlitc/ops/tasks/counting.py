"""Counting: "How many cats?" answered by the number of annotated non-crowd instances.

A category is skipped when its count is ambiguous: a crowd region of that category exists (the
annotators did not count it), or the count is above ``max_count``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, task_schema
from vlitc.ops.tasks.objects import plural
from vlitc.records import Record


@register("task", "counting")
class Counting(AdaptTask):
    """Per category in an image, ask how many there are; the answer is the instance count."""

    version = 1
    default_pool = "counting"
    provides = frozenset({"category", "plural"})
    required = (frozenset({"category", "plural"}),)
    reads = ("image", "objects")
    params_schema = task_schema(
        ["short", "free"], "short",
        max_count={"type": "integer", "minimum": 1, "default": 10},
        min_count={"type": "integer", "minimum": 1, "default": 1},
    )

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        objs = rec.get("objects") or []
        crowd = {o["category"] for o in objs if o.get("iscrowd")}
        counts = Counter(o["category"] for o in objs if not o.get("iscrowd"))
        lo, hi = int(self.params["min_count"]), int(self.params["max_count"])
        for cat in sorted(counts):
            n = counts[cat]
            if cat in crowd:
                ctx.count("skipped_crowd")
                continue
            if not lo <= n <= hi:
                ctx.count("skipped_count_range")
                continue
            yield Item(cat, {"category": cat, "plural": plural(cat)}, str(n),
                       {"count": {"category": cat, "n": n}})
