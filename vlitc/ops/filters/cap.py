"""Per-image cap: at most N samples per image per task."""

from __future__ import annotations

from typing import ClassVar

from vlitc.ops.base import Filter, OpContext
from vlitc.ops.filters.dedup import scope_key
from vlitc.ops.registry import register
from vlitc.records import Sample


@register("filter", "per_image_cap")
class PerImageCapFilter(Filter):
    """Keep at most ``max`` samples per image within each task (the first ones, in input order),
    so that no image dominates a task. Text-only samples are never capped.

    Reads: image, task. Writes: stats.rank (the sample's position among its image's samples in
    its task), stats.image.
    """

    version = 1
    scope = "dataset"
    reads = ("image", "task")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"max": {"type": "integer", "minimum": 1}},
        "required": ["max"],
        "additionalProperties": False,
    }
    keep_params = ("max",)

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        seen: dict[tuple[str, str], int] = {}
        out: list[dict] = []
        for s in samples:
            if not s.get("image"):
                out.append({"rank": None, "image": None})
                continue
            key = (str(s.get("task", "")), scope_key(s, "image"))
            seen[key] = seen.get(key, 0) + 1
            out.append({"rank": seen[key], "image": key[1], "task": key[0]})
        return out

    def keep(self, stats: dict) -> str | None:
        limit = self.params["max"]
        if stats["rank"] is not None and stats["rank"] > limit:
            return (f"per-image cap: sample {stats['rank']} of image {stats['image']} in task "
                    f"{stats['task']!r} (max {limit})")
        return None
