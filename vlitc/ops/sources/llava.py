"""LLaVA-format data re-ingested as records, so it can be filtered, balanced and re-exported."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    BOX_FORMATS,
    FILE,
    IMAGES,
    SAMPLING,
    AnnotationSource,
    Entry,
    Issues,
    coco_id,
    fit_box,
    read_items,
    schema,
    to_pixels,
)
from vlitc.ops.sources.text import read_turns
from vlitc.ops.sources.vqa import group


@register("source", "llava")
class LlavaSource(AnnotationSource):
    """Load LLaVA-format JSON / JSON Lines: ``conversations`` (human/gpt turns, ``<image>``
    placeholders removed: samples put their own back) and, in LLaVA's GPT-4 context files,
    ``captions`` and ``instances`` (category + box). Items on one image merge into one record
    when ``id: image``.
    """

    version = 1
    file_params = ("file",)
    writes = ("id", "image", "conversations", "captions", "objects")
    params_schema = schema(
        {
            "file": FILE | {"description": "LLaVA JSON array or JSON Lines"},
            "id": {"enum": ["item", "image"], "default": "item",
                   "description": "record id: the item's id, or the image's (COCO id when the "
                                  "file name has one) to join with other sources"},
            "box_format": {"enum": list(BOX_FORMATS), "default": "normalized",
                           "description": "how instance boxes are written in the file"},
            **IMAGES,
            **SAMPLING,
        },
        required=("file",),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        path = self.path(ctx, "file")
        by_image = self.params["id"] == "image"
        pairs = []
        for i, (line, item) in enumerate(read_items(path)):
            if not isinstance(item, dict):
                issues.add("bad_item", f"{path.name}:{line or i}")
                continue
            image = item.get("image")
            if by_image and image:
                rid = coco_id(PurePosixPath(image).name) or PurePosixPath(image).stem
            else:
                rid = str(item.get("id", i))
            pairs.append(((rid, image), (f"{path.name}:{line or i}", item)))
        return [Entry(rid, image, None, None, items) for (rid, image), items in group(pairs).items()]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        out: dict[str, Any] = {}
        fmt = self.params["box_format"]
        for where, item in data:
            if "conversations" in item:
                turns, system, n = read_turns(item["conversations"], issues, where)
                if turns and item.get("image") and n != 1:
                    issues.add("image_placeholder_count", {"item": where, "placeholders": n})
                out.setdefault("conversations", []).extend(turns)
                if system:
                    out.setdefault("meta", {})["system"] = system
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
