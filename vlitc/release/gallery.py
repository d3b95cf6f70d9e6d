"""Gallery items for the report: a seeded pick of kept and dropped samples, each with a
downscaled inline image, its annotated boxes, conversation, scores and drop reason."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from vlitc.quality.indicators import referred_objects
from vlitc.records import Sample, images_of


def pick(samples: Sequence[Sample], n: int, seed: int, salt: str) -> list[Sample]:
    """``n`` samples chosen with a seeded RNG, spread over tasks (or filters, for dropped ones)."""
    groups: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s["id"]):
        key = ((s.get("meta") or {}).get("drop") or {}).get("filter") or s.get("task", "")
        groups.setdefault(key, []).append(s)
    rng = random.Random(f"{seed}:gallery:{salt}")
    for g in groups.values():
        rng.shuffle(g)
    out: list[Sample] = []
    while len(out) < n and any(groups.values()):
        for key in sorted(groups):
            if groups[key] and len(out) < n:
                out.append(groups[key].pop())
    return out


def thumbnail(path: Path, size: int) -> tuple[str, int, int] | None:
    """A base64 JPEG data URI of the image scaled to fit ``size`` px, with the original size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            rgb = im.convert("RGB")
            rgb.thumbnail((size, size))
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=80, optimize=False, progressive=False)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), w, h


def item(s: Sample, image_path: Callable[[dict], Path] | None, size: int) -> dict:
    """What the report shows for one sample."""
    meta = s.get("meta") or {}
    ann = meta.get("annotations") or {}
    out = {"id": s["id"], "task": s.get("task", ""), "source": s.get("source", ""),
           "turns": s.get("turns", []), "stats": meta.get("stats") or {},
           "drop": meta.get("drop"), "image": None, "boxes": [],
           # what the generator saw: the text rendering of the annotations it wrote from
           "context": meta.get("context") if isinstance(meta.get("context"), str) else None}
    if isinstance(meta.get("rewrite"), dict) and meta["rewrite"].get("original"):
        out["draft"] = meta["rewrite"]["original"]  # what a rewrite refined
    images = images_of(s)
    if images and image_path is not None:
        try:
            thumb = thumbnail(image_path(images[0]), size)
        except KeyError:  # an image root this run does not know
            thumb = None
        if thumb:
            out["image"], w, h = thumb
            out["width"], out["height"] = ann.get("width") or w, ann.get("height") or h
    if len(images) > 1:
        out["n_images"] = len(images)
    if out["image"] and len(images) == 1:
        mentioned = referred_objects(s)
        out["boxes"] = [{"bbox": o["bbox"], "label": o.get("category", ""),
                         "referred": str(o.get("category", "")).lower() in mentioned}
                        for o in ann.get("objects") or [] if len(o.get("bbox") or []) == 4]
    return out
