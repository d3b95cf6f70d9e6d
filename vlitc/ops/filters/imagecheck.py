"""Image-level checks: resolution, aspect ratio and near-blank images (near-duplicate images are
``dedup`` with ``method: image``)."""

from __future__ import annotations

from typing import Any, ClassVar

from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import Sample, images_of


@register("filter", "image_check")
class ImageCheckFilter(Filter):
    """Drop samples with an image that is too small (``min_width``, ``min_height``,
    ``min_pixels``), outside the aspect-ratio band (``aspect``: width / height between ``min``
    and ``max``), or near blank: grey levels with a standard deviation under ``min_std`` (on a
    0-255 scale, at 64x64), or one grey level (of 32 bins) covering more than ``max_dominant``
    of the image. Every image of a multi-image sample is checked; text-only samples pass.
    Facts are computed once per image content. Reads: image. Writes: stats.images.
    """

    version = 1
    reads = ("image",)
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "min_width": {"type": "integer", "minimum": 1, "default": 1},
            "min_height": {"type": "integer", "minimum": 1, "default": 1},
            "min_pixels": {"type": "integer", "minimum": 1},
            "aspect": {"type": "object",
                       "properties": {"min": {"type": "number", "exclusiveMinimum": 0},
                                      "max": {"type": "number", "exclusiveMinimum": 0}},
                       "additionalProperties": False},
            "min_std": {"type": "number", "minimum": 0, "default": 4.0},
            "max_dominant": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                             "default": 0.97},
        },
        "additionalProperties": False,
    }
    keep_params = ("min_width", "min_height", "min_pixels", "aspect", "min_std", "max_dominant")

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        from vlitc.quality.imagefacts import FACTS_NS, facts_of_file

        try:
            cache: Any = ctx.item_cache(FACTS_NS)
        except RuntimeError:
            cache = None
        out = []
        for s in samples:
            rows = []
            for img in images_of(s):
                try:
                    f = facts_of_file(ctx.image_path(img), False, cache, img.get("sha256"))
                except KeyError:
                    f = None
                rows.append({"path": img.get("path"), **({k: f[k] for k in
                             ("width", "height", "std", "dominant")} if f else {"unreadable": True})})
            out.append({"images": rows})
        return out

    def problem(self, im: dict) -> str | None:
        if im.get("unreadable"):
            return "unreadable"
        p = self.params
        w, h = im["width"], im["height"]
        lo_w, lo_h = p["min_width"], p["min_height"]
        if w < lo_w or h < lo_h:
            return f"{w}x{h} under the minimum {lo_w}x{lo_h}"
        if p.get("min_pixels") and w * h < p["min_pixels"]:
            return f"{w * h} pixels < min {p['min_pixels']}"
        band = p.get("aspect") or {}
        ratio = w / h if h else 0.0
        if ("min" in band and ratio < band["min"]) or ("max" in band and ratio > band["max"]):
            return f"aspect ratio {ratio:.2f} outside [{band.get('min', 0)}, {band.get('max', 'inf')}]"
        if im["std"] < p["min_std"]:
            return f"near blank: grey-level std {im['std']:.1f} < {p['min_std']}"
        if im["dominant"] > p["max_dominant"]:
            return f"near blank: one grey level covers {im['dominant']:.0%}"
        return None

    def keep(self, stats: dict) -> str | None:
        for im in stats.get("images") or []:
            why = self.problem(im)
            if why:
                return f"image {im['path']}: {why}"
        return None
