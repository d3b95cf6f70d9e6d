"""Annotation-grounded hallucination check: what the answers claim against what the image's
annotations hold. Model-free."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from vlitc import boxes as B
from vlitc.ops.base import Filter, OpContext
from vlitc.ops.filters.mentions import Claims, Vocabulary, claims, vocabulary, words_of
from vlitc.ops.registry import register
from vlitc.records import Sample, assistant_text

BOX_FORMATS = ("pixel", "normalized", "thousand", "square_padded")


def to_pixels(box: list[float], fmt: str, width: float | None, height: float | None) -> list[float]:
    """A box written in ``fmt`` as absolute pixels ``[x1, y1, x2, y2]``."""
    if fmt == "pixel":
        return box
    if not width or not height:
        raise ValueError("image size unknown")
    conv = {"normalized": B.from_normalized, "thousand": B.from_thousand,
            "square_padded": B.from_square_padded_normalized}[fmt]
    return conv(box, width, height)


def _objects(ann: dict) -> tuple[set[str], Counter, set[str], dict[str, list]]:
    objs = ann.get("objects") or []
    present = {o["category"] for o in objs}
    counts = Counter(o["category"] for o in objs if not o.get("iscrowd"))
    crowd = {o["category"] for o in objs if o.get("iscrowd")}
    by_cat: dict[str, list] = {}
    for o in objs:
        by_cat.setdefault(o["category"], []).append(o["bbox"])
    return present, counts, crowd, by_cat


def caption_objects(ann: dict, vocab: Vocabulary) -> set[str]:
    """The categories the image's reference captions name (not denied), as CHAIR grounds them."""
    out: set[str] = set()
    for cap in ann.get("captions") or []:
        out |= {m.category for m in claims(str(cap), vocab).mentions if not m.denied}
    return out


def object_stats(c: Claims, ann: dict, from_captions: set[str] | None = None,
                 generic: bool = True) -> dict:
    """Mentioned, denied and hallucinated categories, and stated counts, against the objects
    (and, when given, the categories the reference captions name). With ``generic``, mentions in
    hypothetical or generic clauses are set apart (``generic``) and claim nothing."""
    present, counts, crowd, _ = _objects(ann)
    claimed = [m for m in c.mentions if not (generic and m.generic)]
    affirmed = sorted({m.category for m in claimed if not m.denied})
    denied = sorted({m.category for m in claimed if m.denied} - set(affirmed))
    grounded = present | (from_captions or set())
    halluc = [cat for cat in affirmed if cat not in grounded]
    stated = []
    for m in claimed:
        if m.count is not None and not m.denied and m.category in present and m.category not in crowd:
            stated.append({"object": m.category, "stated": m.count, "annotated": counts[m.category]})
    out = {
        "mentioned": affirmed,
        "denied": denied,
        "hallucinated": halluc,
        "rate": round(len(halluc) / len(affirmed), 4) if affirmed else 0.0,
        "counts": stated,
    }
    if generic:
        out["generic"] = sorted({m.category for m in c.mentions if m.generic} - set(affirmed))
    if from_captions:
        out["caption_grounded"] = sorted(set(affirmed) & (from_captions - present))
    return out


def box_stats(c: Claims, ann: dict, fmt: str) -> list[dict]:
    """Best IoU of each written box against the annotated boxes (of its object, when named)."""
    _, _, _, by_cat = _objects(ann)
    everything = [b for bs in by_cat.values() for b in bs]
    out = []
    for box, owner in c.boxes:
        try:
            px = to_pixels(box, fmt, ann.get("width"), ann.get("height"))
        except ValueError:
            continue
        pool = by_cat.get(owner, everything) if owner else everything
        best = max((B.iou(px, b) for b in pool), default=0.0)
        out.append({"box": box, "object": owner, "iou": round(best, 4)})
    return out


def quote_stats(c: Claims, ann: dict) -> list[str]:
    """Quoted strings with a word that no OCR token holds."""
    ocr = {w for t in ann.get("ocr") or [] for w in words_of(t)}
    return [q for q in c.quotes if words_of(q) and not set(words_of(q)) <= ocr]


@register("filter", "hallucination")
class HallucinationFilter(Filter):
    """Drop samples whose answers claim what the image's annotations contradict: objects that are
    not annotated (denials excepted), wrong counts, written boxes that match no annotated box,
    quotes that no OCR token holds.

    Like CHAIR, an object counts as present when the instances hold it *or* (``captions``, on by
    default) one of the image's reference captions names it, so a table every caption names but
    COCO did not box is no hallucination. With ``generic`` (on by default), mentions in a
    hypothetical or generic clause of a reasoning answer ("people may use the umbrella for
    shade", "such as cups") are set apart as ``generic`` and are not claims about the image.

    Objects are checked only when the sample carries ``meta.annotations.objects``, quotes only
    when it carries ``ocr``. Counts are checked against non-crowd instances; ``counts: at_most``
    (the default) lets a text speak of a subset ("two men" of four annotated people, as human
    captions often do), ``exact`` wants the stated number to equal the annotated one.
    Reads: turns (assistant), meta.annotations. Writes: stats (mentioned, hallucinated, rate,
    counts, boxes, wrong_quotes).
    """

    version = 2
    reads = ("turns", "meta.annotations")
    writes = ("meta.stats",)
    file_params = ("synonyms",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "synonyms": {"type": "string", "description": "a TSV synonym table replacing ours"},
            "box_format": {"enum": list(BOX_FORMATS), "default": "pixel"},
            "max_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
            "counts": {"enum": ["exact", "at_most", "ignore"], "default": "at_most"},
            "min_iou": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
            "quotes": {"type": "boolean", "default": True},
            "captions": {"type": "boolean", "default": True,
                         "description": "ground objects on the reference captions too (CHAIR)"},
            "generic": {"type": "boolean", "default": True,
                        "description": "hypothetical or generic mentions claim nothing"},
        },
        "additionalProperties": False,
    }
    keep_params = ("max_rate", "counts", "min_iou", "quotes")

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        path = self.params.get("synonyms")
        vocab = vocabulary(str(ctx.resolve(path)) if path else None)
        return [self.measure_one(s, vocab) for s in samples]

    def measure_one(self, s: Sample, vocab: Vocabulary) -> dict:
        ann = (s.get("meta") or {}).get("annotations") or {}
        c = claims(assistant_text(s), vocab)
        stats: dict = {"objects_checked": "objects" in ann, "ocr_checked": "ocr" in ann}
        if stats["objects_checked"]:
            caps = caption_objects(ann, vocab) if self.params["captions"] else None
            stats.update(object_stats(c, ann, caps, self.params["generic"]))
            stats["boxes"] = box_stats(c, ann, self.params["box_format"])
        else:
            stats["mentioned"] = sorted({m.category for m in c.mentions if not m.denied})
        stats["wrong_quotes"] = quote_stats(c, ann) if stats["ocr_checked"] else []
        return stats

    def wrong_counts(self, stats: dict) -> list[dict]:
        mode = self.params["counts"]
        if mode == "ignore":
            return []
        if mode == "exact":
            return [c for c in stats.get("counts", []) if c["stated"] != c["annotated"]]
        return [c for c in stats.get("counts", []) if c["stated"] > c["annotated"]]

    def keep(self, stats: dict) -> str | None:
        reasons = []
        limit = self.params["max_rate"]
        if stats.get("hallucinated") and stats["rate"] > limit:
            reasons.append(f"hallucinated objects: {', '.join(stats['hallucinated'])} "
                           f"(CHAIR {stats['rate']:.2f} > {limit:.2f})")
        wrong = self.wrong_counts(stats)
        if wrong:
            reasons.append("wrong counts: " + ", ".join(
                f"{c['stated']} {c['object']} (annotated {c['annotated']})" for c in wrong))
        min_iou = self.params["min_iou"]
        bad = [b for b in stats.get("boxes", []) if b["iou"] < min_iou]
        if bad:
            reasons.append("wrong boxes: " + ", ".join(
                f"{b['object'] or 'box'} {b['box']} (best IoU {b['iou']:.2f} < {min_iou})" for b in bad))
        if stats["wrong_quotes"] and self.params["quotes"]:
            reasons.append("quoted text not in OCR: " + ", ".join(repr(q) for q in stats["wrong_quotes"]))
        return "; ".join(reasons) or None
