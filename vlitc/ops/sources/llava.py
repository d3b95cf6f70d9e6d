"""LLaVA-format data re-ingested as records, so it can be filtered, balanced and re-exported."""

from __future__ import annotations

from typing import Any

from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    BOX_FORMATS,
    FILE,
    IMAGES,
    SAMPLING,
    Issues,
    fit_box,
    schema,
    to_pixels,
)
from vlitc.ops.sources.text import ID_PARAM, ConversationSource


@register("source", "llava")
class LlavaSource(ConversationSource):
    """Load LLaVA-format JSON, JSON Lines or Parquet: ``conversations`` (human/gpt turns) on
    ``image`` (a path, or a list of paths with one ``<image>`` each: LLaVA-OneVision and
    M4-Instruct multi-image data) and, in LLaVA's GPT-4 context files, ``captions`` and
    ``instances`` (category + box). Each item is one entry of the record's ``conversations``
    (its id, ``file:line`` and plain fields kept); with one image its ``<image>`` placeholder is
    removed (samples put it back at the start), with several they stay where the data put them.
    Items on one image merge into one record when ``id: image``.

    ``assume_size`` gives normalised boxes a pixel size when no image is read and the file has
    none (IoU between boxes of one image does not depend on the size chosen).
    """

    version = 2
    file_params = ("file",)
    writes = ("id", "image", "conversations", "captions", "objects")
    params_schema = schema(
        {
            "file": FILE | {"description": "LLaVA JSON array, JSON Lines or Parquet"},
            "id": ID_PARAM,
            "box_format": {"enum": list(BOX_FORMATS), "default": "normalized",
                           "description": "how instance boxes are written in the file"},
            "assume_size": {"type": "array", "items": {"type": "integer", "minimum": 1},
                            "minItems": 2, "maxItems": 2,
                            "description": "[width, height] for boxes of images of unknown size"},
            **IMAGES,
            **SAMPLING,
        },
        required=("file",),
    )

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        out = super().layers(data, width, height, issues)
        fmt = self.params["box_format"]
        assumed = self.params.get("assume_size")
        if assumed and not (width and height):
            width, height = assumed
            out.setdefault("meta", {})["image_size"] = list(assumed)
        for where, item, *_ in data:
            if "captions" in item:
                out.setdefault("captions", []).extend(c.strip() for c in item["captions"] or [])
            if "instances" in item:
                objs = out.setdefault("objects", [])
                for o in item["instances"] or []:
                    raw = o.get("bbox")
                    box = to_pixels(raw, fmt, width, height)
                    box = fit_box(box, width, height, issues, {"item": where, "bbox": raw})
                    if box is not None:
                        objs.append({"id": len(objs), "category": o.get("category"), "bbox": box,
                                     "attributes": [], "iscrowd": False})
        return out
