"""Text-only conversations passed through: existing instruction data without an image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from vlitc.ops.base import OpContext, Task
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Record, Sample, grounding, sample, structure_problems

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


@register("task", "text_only")
class TextOnly(Task):
    """Pass the ``conversations`` of records without an image through as text-only samples."""

    version = 1
    reads = ("conversations",)
    writes = ("turns", "meta.record_id", "meta.annotations")
    params_schema = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1},
        },
        "required": ["source"],
        "additionalProperties": False,
    }

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        for rec in records:
            if rec.get("image") is not None:
                ctx.count("skipped_has_image")
                continue
            turns = [{"role": _ROLES.get(t.get("role", ""), t.get("role", "")),
                      "content": str(t.get("content", "")).strip()}
                     for t in rec.get("conversations") or [] if t.get("role") != "system"]
            if any(IMAGE_TOKEN in t["content"] for t in turns):
                ctx.count("skipped_image_placeholder")
                continue
            s = sample(f"{self.label}/{rec['id']}", self.label, turns, source=rec.get("source", ""),
                       meta={"record_id": rec["id"], "template": None, "format": "free",
                             "annotations": grounding(rec)})
            if structure_problems(s):
                ctx.count("skipped_bad_structure")
                continue
            ctx.count("samples")
            yield s
