"""Gallery items for the report: a seeded pick of kept and dropped samples (a bottom-k
reservoir, kept as the samples stream past), each with a downscaled inline image, its
annotated boxes, conversation, scores and drop reason."""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlitc.quality.indicators import referred_objects
from vlitc.records import Sample, images_of


def rank(seed: int, salt: str, sample_id: str) -> int:
    """A sample's place in the seeded gallery order: a hash of the seed and its id."""
    h = hashlib.blake2b(f"{seed}:gallery:{salt}:{sample_id}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


class Reservoir:
    """A seeded sample of at most ``n`` items per group, kept as the samples stream past: an
    item's rank is a hash of the seed and its id, and each group keeps its ``n`` lowest ranks
    (bottom-k sampling). Memory is ``n`` per group, and the pick is the same whatever order
    the items come in."""

    def __init__(self, n: int, seed: int, salt: str):
        self.n, self.seed, self.salt = n, seed, salt
        self._heaps: dict[str, list[tuple[int, str, Any]]] = {}

    def add(self, group: str, sample_id: str, item: Any) -> None:
        if self.n <= 0:
            return
        heap = self._heaps.setdefault(group, [])
        entry = (-rank(self.seed, self.salt, sample_id), sample_id, item)
        if len(heap) < self.n:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:  # a lower rank than the highest kept
            heapq.heapreplace(heap, entry)

    def groups(self) -> dict[str, list[Any]]:
        """Each group's items, lowest rank first."""
        return {g: [e[2] for e in sorted(h, key=lambda e: (-e[0], e[1]))]
                for g, h in sorted(self._heaps.items())}


def pick(samples: Iterable[Sample], n: int, seed: int, salt: str) -> list[Sample]:
    """``n`` samples chosen by a seeded rank, spread over tasks (or filters, for dropped ones):
    taken in turn from each group, lowest rank first. Streams: holds ``n`` per group."""
    res = Reservoir(n, seed, salt)
    for s in samples:
        res.add(group_of(s), str(s["id"]), s)
    return taken(res, n)


def group_of(s: Sample) -> str:
    """The gallery group of a sample: the filter that dropped it, else its task."""
    return str(((s.get("meta") or {}).get("drop") or {}).get("filter") or s.get("task", ""))


def taken(res: Reservoir, n: int) -> list[Sample]:
    """``n`` items of a reservoir, taken in turn from each group, lowest rank first."""
    groups = res.groups()
    out: list[Sample] = []
    while len(out) < n and any(groups.values()):
        for key in groups:
            if groups[key] and len(out) < n:
                out.append(groups[key].pop(0))
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
