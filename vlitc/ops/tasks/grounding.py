"""Grounding tasks: referring expression -> box (``rec``), box -> expression (``reg``), and
region captioning (``region_caption``).

Expressions come from the record's ``regions`` (phrases with boxes) and, with ``from: objects``
or ``both``, from objects whose category occurs once in the image ("the couch"), so the
expression is never ambiguous. Boxes are written in a declared box format (LLaVA-1.5's padded
square with two decimals by default, or a model family's grounding syntax: ``qwen_vl``,
``qwen2_vl``, ``internvl``, which also tag the phrase in a ``rec`` answer) and decode back to the
annotated box within its precision.
"""

from __future__ import annotations

from collections.abc import Iterator

from vlitc import formats as fmt
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, task_schema
from vlitc.ops.tasks.objects import unique_objects
from vlitc.records import Record, one_image


def _schema(origin: dict) -> dict:
    schema = task_schema(box_format={"enum": list(fmt.BOX_FORMATS), "default": "bbox"})
    schema["properties"]["from"] = origin  # a keyword in Python, so not a task_schema argument
    return schema


class _BoxTask(AdaptTask):
    reads = ("image", "regions|objects")
    kinds: tuple[str, ...] = ()  # region kinds used (empty: all)

    @property
    def box(self) -> fmt.BoxFormat:
        return fmt.FORMATS[self.params["box_format"]]  # type: ignore[return-value]

    def phrases(self, rec: Record) -> Iterator[tuple[str, str, list[float]]]:
        """``(key, phrase, box)`` for each unambiguous expression with a box."""
        src = self.params["from"]
        if src in ("regions", "both"):
            for i, r in enumerate(rec.get("regions") or []):
                if r.get("bbox") and r.get("phrase") and (not self.kinds or r.get("kind", "ref") in self.kinds):
                    yield f"r{i}", r["phrase"].strip(), r["bbox"]
        if src in ("objects", "both"):
            for o in unique_objects(rec):
                yield f"o{o.get('id', o['category'])}", f"the {o['category']}", o["bbox"]

    def boxed(self, rec: Record, ctx: OpContext, tag_phrase: bool = False,
              ) -> Iterator[tuple[str, str, list[float], str]]:
        """``(key, phrase, box, box text)``; ``tag_phrase``: formats that tag the referred
        phrase (Qwen-VL's ``<ref>``) write it before the box."""
        img = one_image(rec)
        w, h = img.get("width"), img.get("height")
        if not (w and h):
            return
        for key, phrase, box in self.phrases(rec):
            yield key, phrase, box, self.box.encode(box, w, h, phrase if tag_phrase else None)


_FROM = {"enum": ["regions", "objects", "both"], "default": "both"}


@register("task", "rec")
class ReferringComprehension(_BoxTask):
    """Referring-expression comprehension: the expression in, its box (in the box format) out."""

    version = 1
    default_pool = "rec"
    provides = frozenset({"phrase"})
    required = (frozenset({"phrase"}),)
    kinds = ("ref",)
    params_schema = _schema(_FROM)

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        for key, phrase, box, text in self.boxed(rec, ctx, tag_phrase=True):
            yield Item(key, {"phrase": phrase}, text,
                       {"box": {"bbox": box, "format": self.box.name}})

    @property
    def format(self) -> fmt.ResponseFormat:
        return self.box


@register("task", "reg")
class ReferringGeneration(_BoxTask):
    """Referring-expression generation: a box (in the box format) in, its expression out."""

    version = 1
    default_pool = "reg"
    provides = frozenset({"bbox"})
    required = (frozenset({"bbox"}),)
    kinds = ("ref",)
    params_schema = _schema(_FROM)

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        for key, phrase, box, text in self.boxed(rec, ctx):
            yield Item(key, {"bbox": text}, phrase, {"box": {"bbox": box, "format": self.box.name}})


@register("task", "region_caption")
class RegionCaption(_BoxTask):
    """Region captioning: a box in, the region's caption (its description) out."""

    version = 1
    default_pool = "region_caption"
    provides = frozenset({"bbox"})
    required = (frozenset({"bbox"}),)
    kinds = ("caption", "dense")
    params_schema = _schema({"enum": ["regions"], "default": "regions"})

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        from vlitc.ops.tasks.caption import clean_caption

        for key, phrase, box, text in self.boxed(rec, ctx):
            yield Item(key, {"bbox": text}, clean_caption(phrase),
                       {"box": {"bbox": box, "format": self.box.name}})
