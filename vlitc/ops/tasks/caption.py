"""Caption tasks: a brief caption per caption annotation, a detailed caption per image."""

from __future__ import annotations

from collections.abc import Iterator

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, task_schema
from vlitc.records import Record


def clean_caption(text: str) -> str:
    """One line, single spaces, a capital first letter and a final full stop."""
    return _sentence(" ".join(text.split()))


def _sentence(t: str) -> str:
    """:func:`clean_caption` of text whose words are already joined by single spaces."""
    if not t:
        return t
    t = t[0].upper() + t[1:]
    return t if t[-1] in ".!?" else t + "."


@register("task", "brief_caption")
class BriefCaption(AdaptTask):
    """One sample per caption: a brief-description instruction answered by the caption."""

    version = 1
    default_pool = "brief_caption"
    provides = frozenset({"caption_index"})
    reads = ("image", "captions")
    params_schema = task_schema(
        ["free", "one_sentence"], "free",
        per={"enum": ["caption", "image"], "default": "caption"},
        min_words={"type": "integer", "minimum": 1, "default": 3},
    )

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        caps = rec.get("captions") or []
        if self.params["per"] == "image" and caps:
            from vlitc.ops.tasks.base import stable_index

            i = stable_index(f"{ctx.seed}:{self.label}:{rec['id']}", len(caps))
            caps = [caps[i]]
        lo = int(self.params["min_words"])
        for i, c in enumerate(caps):
            words = c.split()
            if len(words) < lo:
                ctx.count("skipped_short")
                continue
            yield Item(str(i), {"caption_index": i}, _sentence(" ".join(words)))


@register("task", "detailed_caption")
class DetailedCaption(AdaptTask):
    """One sample per image: a detailed-description instruction answered by its longest caption."""

    version = 1
    default_pool = "detailed_caption"
    reads = ("image", "captions")
    params_schema = task_schema(["free"], "free", min_words={"type": "integer", "minimum": 1, "default": 15})

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        caps = rec.get("captions") or []
        if not caps:
            return
        best = max(caps, key=lambda c: (len(c.split()), c))
        if len(best.split()) < int(self.params["min_words"]):
            ctx.count("skipped_short")
            return
        yield Item("0", {}, clean_caption(best))
