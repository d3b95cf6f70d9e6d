"""Scene-text sources: TextVQA and TextCaps (with Rosetta OCR tokens) and COCO-Text."""

from __future__ import annotations

from typing import Any, ClassVar

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    IMAGES,
    SAMPLING,
    SPLIT,
    AnnotationSource,
    Entry,
    Issues,
    fit_box,
    need,
    read_items,
    read_json,
    schema,
    to_pixels,
)
from vlitc.ops.sources._vqa_eval import consensus
from vlitc.ops.sources.vqa import PATTERN, image_name


def rosetta_tokens(info: list[dict], width: Any, height: Any, issues: Issues) -> list[dict]:
    """Rosetta ``ocr_info`` entries (boxes normalised to 0..1, top-left + size) as OCR tokens."""
    out = []
    for t in info:
        bb = t.get("bounding_box") or {}
        x, y = bb.get("top_left_x", 0.0), bb.get("top_left_y", 0.0)
        raw = [x, y, x + bb.get("width", 0.0), y + bb.get("height", 0.0)]
        box = to_pixels(raw, "normalized", width, height)
        if box is not None:
            box = fit_box(box, width, height, issues, {"word": t.get("word"), "box": raw})
        out.append({"text": t.get("word", ""), "bbox": box})
    return out


@register("source", "textvqa")
class TextVqaSource(AnnotationSource):
    """Load TextVQA questions (ten answers, VQA-accuracy consensus) and/or TextCaps captions, with
    the Rosetta OCR tokens of each image when an OCR file is given.
    """

    version = 1
    file_params: ClassVar[tuple[str, ...]] = ("questions", "captions", "ocr")
    writes: ClassVar[tuple[str, ...]] = ("id", "image", "qas", "captions", "ocr")
    params_schema = schema(
        {
            "questions": FILE | {"description": "TextVQA_0.5.1_<split>.json"},
            "captions": FILE | {"description": "TextCaps_0.1_<split>.json"},
            "ocr": FILE | {"description": "TextVQA_Rosetta_OCR_v0.2_<split>.json"},
            "image_pattern": PATTERN | {"default": "{id}.jpg"},
            **IMAGES,
            **SAMPLING,
            **SPLIT,
        },
        any_of=("questions", "captions"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        by_image: dict[Any, dict] = {}
        for param, layer in (("questions", "qas"), ("captions", "captions")):
            if param in self.params:
                for _, item in read_items(self.path(ctx, param)):
                    slot = by_image.setdefault(item.get("image_id"), {"first": item})
                    slot.setdefault(layer, []).append(item)
        ocr: dict[Any, list] = {}
        if "ocr" in self.params:
            for _, item in read_items(self.path(ctx, "ocr")):
                ocr[item.get("image_id")] = item.get("ocr_info") or []
        pattern = self.params["image_pattern"]
        path = self.path(ctx, "questions" if "questions" in self.params else "captions")
        out = []
        for iid, slot in by_image.items():
            first = slot["first"]
            slot["ocr"] = ocr.get(iid)
            out.append(Entry(str(iid), image_name(pattern, iid, path), first.get("image_width"),
                             first.get("image_height"), slot, first.get("set_name")))
        return out

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        out: dict[str, Any] = {}
        if "qas" in data:
            qas = []
            for q in data["qas"]:
                answers = list(q.get("answers") or [])
                best, agreement = consensus(answers)
                qas.append({"id": str(q.get("question_id")), "question": q.get("question"),
                            "answers": answers, "answer": best, "agreement": agreement,
                            "answer_type": None})
            out["qas"] = qas
        if "captions" in data:
            caps = [c.get("caption_str") for c in data["captions"]]
            out["captions"] = list(dict.fromkeys(c.strip() for c in caps if c))
        if data.get("ocr") is not None:
            out["ocr"] = rosetta_tokens(data["ocr"], width, height, issues)
        return out


@register("source", "textcaps")
class TextCapsSource(TextVqaSource):
    """Load TextCaps captions (published in the TextVQA file layout), with Rosetta OCR tokens."""

    file_params = ("captions", "ocr")
    writes = ("id", "image", "captions", "ocr")
    params_schema = schema(
        {k: v for k, v in TextVqaSource.params_schema["properties"].items() if k != "questions"},
        required=("captions",),
    )


@register("source", "coco_text")
class CocoTextSource(AnnotationSource):
    """Load COCO-Text v2: text instances (string, pixel box, legibility, class) on COCO images."""

    version = 1
    file_params = ("annotations",)
    writes = ("id", "image", "ocr")
    params_schema = schema(
        {
            "annotations": FILE | {"description": "cocotext.v2.json"},
            "legible_only": {"type": "boolean", "default": True,
                             "description": "keep only legible text instances"},
            "keep_empty": {"type": "boolean", "default": False,
                           "description": "yield images that have no (kept) text"},
            **IMAGES,
            **SAMPLING,
            **SPLIT,
        },
        required=("annotations",),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "annotations")
        doc = read_json(path, drop=("mask",))
        imgs = need(doc, "imgs", path, dict)
        anns = need(doc, "anns", path, dict)
        legible = self.params["legible_only"]
        by_image: dict[str, list] = {}
        for a in anns.values():
            if legible and a.get("legibility") != "legible":
                continue
            iid = str(a.get("image_id"))
            if iid not in imgs:
                issues.add("annotation_unknown_image", {"annotation": a.get("id"), "image_id": iid})
                continue
            by_image.setdefault(iid, []).append(a)
        keep_empty = self.params["keep_empty"]
        return [Entry(str(int(iid)) if iid.isdigit() else iid, im.get("file_name"),
                      im.get("width"), im.get("height"), by_image.get(iid, []), im.get("set"))
                for iid, im in imgs.items() if keep_empty or iid in by_image]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        ocr = []
        for a in data:
            box = fit_box(to_pixels(a.get("bbox"), "xywh", width, height), width, height, issues,
                          {"annotation": a.get("id"), "bbox": a.get("bbox")})
            if box is None:
                continue
            ocr.append({"text": a.get("utf8_string", ""), "bbox": box,
                        "legible": a.get("legibility") == "legible", "class": a.get("class"),
                        "language": a.get("language")})
        return {"ocr": ocr}
