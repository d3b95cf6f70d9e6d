"""OCR reading: the text in an image (all tokens in reading order), or one token by its box."""

from __future__ import annotations

from collections.abc import Iterator

from vlitc import formats as fmt
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, task_schema
from vlitc.records import Record, one_image


def reading_order(tokens: list[dict]) -> list[dict]:
    """Tokens top to bottom, then left to right (lines grouped by overlapping vertical extent);
    tokens without boxes keep their given order."""
    if not all(t.get("bbox") for t in tokens):
        return list(tokens)
    rest = sorted(tokens, key=lambda t: (t["bbox"][1], t["bbox"][0]))
    lines: list[list[dict]] = []
    for t in rest:
        if lines:
            ref = lines[-1][0]["bbox"]
            mid = (t["bbox"][1] + t["bbox"][3]) / 2
            if ref[1] <= mid <= ref[3]:
                lines[-1].append(t)
                continue
        lines.append([t])
    return [t for line in lines for t in sorted(line, key=lambda t: t["bbox"][0])]


@register("task", "ocr")
class OCRReading(AdaptTask):
    """Read the text in an image: all OCR tokens in reading order, or (per token) the token at a box."""

    version = 1

    # a per-instance value where the base has a class constant; reads go through the instance
    @property
    def default_pool(self) -> str:  # type: ignore[override]
        return "ocr_token" if self.params["per"] == "token" else "ocr"

    @property
    def required(self) -> tuple[frozenset[str], ...]:  # type: ignore[override]
        return (frozenset({"bbox"}),) if self.params["per"] == "token" else ()

    provides = frozenset({"bbox"})
    reads = ("image", "ocr")
    params_schema = task_schema(
        ["free", "short"], "free",
        per={"enum": ["image", "token"], "default": "image"},
        box_format={"enum": list(fmt.BOX_FORMATS), "default": "bbox"},
        max_tokens={"type": "integer", "minimum": 1, "default": 50},
    )

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        tokens = [t for t in rec.get("ocr") or [] if str(t.get("text", "")).strip()]
        if not tokens:
            return
        if self.params["per"] == "image":
            if len(tokens) > int(self.params["max_tokens"]):
                ctx.count("skipped_too_much_text")
                return
            yield Item("0", {}, " ".join(t["text"].strip() for t in reading_order(tokens)))
            return
        img = one_image(rec)
        bf: fmt.BoxFormat = fmt.FORMATS[self.params["box_format"]]  # type: ignore[assignment]
        for i, t in enumerate(tokens):
            if t.get("bbox") and img.get("width") and img.get("height"):
                yield Item(str(i), {"bbox": bf.encode(t["bbox"], img["width"], img["height"])},
                           t["text"].strip(), {"box": {"bbox": t["bbox"], "format": bf.name}})
