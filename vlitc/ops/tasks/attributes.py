"""Attribute questions: "What attributes does the car at [box] have?" -> its annotated attributes."""

from __future__ import annotations

from collections.abc import Iterator

from vlitc import formats as fmt
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, task_schema
from vlitc.records import Record, one_image


def join_words(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@register("task", "attributes")
class Attributes(AdaptTask):
    """Per non-crowd object with attributes, ask for them; the answer lists them in order given."""

    version = 1
    default_pool = "attributes"
    provides = frozenset({"category", "bbox"})
    required = (frozenset({"bbox"}),)
    reads = ("image", "objects")
    params_schema = task_schema(
        ["free", "short"], "free",
        box_format={"enum": list(fmt.BOX_FORMATS), "default": "bbox"},
    )

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        img = one_image(rec)
        w, h = img.get("width"), img.get("height")
        bf: fmt.BoxFormat = fmt.FORMATS[self.params["box_format"]]  # type: ignore[assignment]
        for i, o in enumerate(rec.get("objects") or []):
            attrs = list(dict.fromkeys(a.strip() for a in o.get("attributes") or [] if a.strip()))
            if o.get("iscrowd") or not attrs or not (w and h):
                continue
            yield Item(str(o.get("id", i)),
                       {"category": o["category"], "bbox": bf.encode(o["bbox"], w, h)},
                       join_words(attrs), {"box": {"bbox": o["bbox"], "format": bf.name}})
