"""COCO-format sources: captions and instances files (any dataset published in COCO format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    _SHAPE_ERRORS,
    EXAMPLES,
    FILE,
    IMAGES,
    SAMPLING,
    AnnotationSource,
    Entry,
    Irregular,
    Issues,
    fit_box,
    iter_members,
    need,
    read_json,
    schema,
)


class CocoFile:
    """One parsed COCO-format file: images by id (``(file_name, width, height)``), annotations
    grouped by image id (``captions``: each annotation's ``caption`` alone), categories.

    The file is read in blocks (:func:`~vlitc.ops.sources._common.iter_members`): what is kept
    is the images and the grouped annotations, never the whole document, so a file of millions
    of captions parses in bounded memory. A file laid out otherwise (annotations before images,
    a repeated member, anything malformed) is read whole, with the same result or the same
    located error. Segmentation polygons are dropped while parsing; annotations naming an image
    the file does not list are counted (``annotation_unknown_image``) and left out.
    """

    def __init__(self, path: Path, issues: Issues, captions: bool = False):
        self.path = path
        self.captions = captions
        try:
            images, by_image, categories, unknown = self._blocks(path)
        except Irregular:
            images, by_image, categories, unknown = self._whole(path)
        self.images: dict[Any, tuple[Any, Any, Any]] = images
        self.by_image: dict[Any, list] = by_image
        self.categories: dict[int, str] = categories
        examples, n = unknown
        for example in examples:
            issues.add("annotation_unknown_image", example)
        if n > len(examples):
            issues.ctx.count("annotation_unknown_image", n - len(examples))

    def _blocks(self, path: Path) -> tuple[dict, dict, dict, tuple[list, int]]:
        images: dict[Any, tuple] = {}
        by_image: dict[Any, list] = {}
        seen: set[str] = set()
        categories: Any = None
        unknown = 0
        examples: list[dict] = []
        try:
            for key, values, piece in iter_members(path, ("images", "annotations"), drop=DROP):
                if key == "images":
                    if not piece or "annotations" in seen:  # read whole: need() says what is wrong
                        raise Irregular
                    for im in values:
                        images[im["id"]] = (im.get("file_name"), im.get("width"), im.get("height"))
                elif key == "annotations":
                    if not piece or "images" not in seen:
                        raise Irregular
                    unknown += self._group(values, images, by_image, examples)
                elif key == "categories":
                    categories = values
                seen.add(key)
            if not {"images", "annotations"} <= seen:
                raise Irregular
            cats = {c["id"]: c["name"] for c in categories or [] if isinstance(c, dict)}
        except _SHAPE_ERRORS:  # read whole, for the error as it is found there
            raise Irregular from None
        return images, by_image, cats, (examples, unknown)

    def _whole(self, path: Path) -> tuple[dict, dict, dict, tuple[list, int]]:
        doc = read_json(path, drop=DROP)
        images = {im["id"]: (im.get("file_name"), im.get("width"), im.get("height"))
                  for im in need(doc, "images", path)}
        anns = need(doc, "annotations", path)
        categories = {c["id"]: c["name"] for c in doc.get("categories") or [] if isinstance(c, dict)}
        by_image: dict[Any, list] = {}
        examples: list[dict] = []
        unknown = self._group(anns, images, by_image, examples)
        return images, by_image, categories, (examples, unknown)

    def _group(self, anns: list, images: dict, by_image: dict[Any, list], examples: list[dict]) -> int:
        """Add annotations to their image's group (``captions``: the caption alone); the
        number naming an image the file does not list, the first :data:`EXAMPLES` of them
        added to ``examples``."""
        caption, unknown = self.captions, 0
        for a in anns:
            iid = a.get("image_id")
            if iid in images:
                kept = a.get("caption") if caption else a
                lst = by_image.get(iid)
                if lst is None:
                    by_image[iid] = [kept]
                else:
                    lst.append(kept)
            else:
                unknown += 1
                if len(examples) < EXAMPLES:
                    examples.append({"file": self.path.name, "annotation": a.get("id"), "image_id": iid})
        return unknown


#: keys dropped while parsing a COCO file
DROP = ("segmentation",)


def coco_objects(anns: list[dict], cats: dict[Any, str], width: Any, height: Any,
                 issues: Issues, crowd: bool = True) -> list[dict]:
    """COCO instance annotations as record objects with canonical pixel boxes."""
    out = []
    for a in anns:
        name = cats.get(a.get("category_id"))
        if name is None:
            issues.add("unknown_category", {"annotation": a.get("id"),
                                            "category_id": a.get("category_id")})
            continue
        iscrowd = bool(a.get("iscrowd", 0))
        if iscrowd and not crowd:
            continue
        bb = a.get("bbox")
        try:
            x, y, w, h = bb  # type: ignore[misc]
            x, y = float(x), float(y)
            box = [x, y, round(x + w, 2), round(y + h, 2)]
        except (TypeError, ValueError):
            box = None
        # the common case (a box inside its image) without a call; the rest through fit_box
        if box is None or not (0 <= x < box[2] <= (width or box[2]) and
                               0 <= y < box[3] <= (height or box[3])):
            box = fit_box(box and [float(v) for v in box], width, height, issues,
                          {"annotation": a.get("id"), "bbox": bb})
            if box is None:
                continue
        out.append({"id": a.get("id"), "category": name, "bbox": box, "attributes": [],
                    "iscrowd": iscrowd})
    return out


@register("source", "coco")
class CocoSource(AnnotationSource):
    """Load a COCO-format dataset: captions and/or instances files, one record per image.

    Records carry ``captions`` and ``objects`` (category name, ``[x1, y1, x2, y2]`` pixel box,
    crowd flag); the record id is the image id. Segmentation polygons are never kept.
    """

    version = 1
    file_params = ("captions", "instances")
    writes = ("id", "image", "captions", "objects")
    builds_apart = True  # the categories travel with the entries (pack)
    params_schema = schema(
        {
            "captions": FILE | {"description": "COCO captions file (captions_*.json)"},
            "instances": FILE | {"description": "COCO instances file (instances_*.json)"},
            "crowd": {"type": "boolean", "default": True,
                      "description": "keep crowd (iscrowd) regions as objects"},
            "keep_empty": {"type": "boolean", "default": True,
                           "description": "yield images that have no captions and no objects"},
            **IMAGES,
            **SAMPLING,
        },
        any_of=("captions", "instances"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        caps = CocoFile(self.path(ctx, "captions"), issues, captions=True) if "captions" in self.params else None
        inst = CocoFile(self.path(ctx, "instances"), issues) if "instances" in self.params else None
        images = dict(caps.images) if caps else {}
        if inst:
            images.update(inst.images)
        self.categories = inst.categories if inst else {}
        keep_empty = self.params["keep_empty"]
        out = []
        for iid, im in images.items():
            c = caps.by_image.get(iid) if caps else None
            o = inst.by_image.get(iid) if inst else None
            if not (c or o or keep_empty):
                continue
            out.append(Entry(str(iid), im[0], im[1], im[2], (c, o)))
        return out

    def pack(self, entries: list[Entry]) -> Any:
        """Entries travel as plain tuples (pickled faster), with the categories their objects
        are named by."""
        return self.categories, [tuple(e) for e in entries]

    def unpack(self, packed: Any) -> list[Entry]:
        self.categories, entries = packed
        return [Entry(*e) for e in entries]

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        caps, anns = data
        out: dict[str, Any] = {}
        if "captions" in self.params:
            out["captions"] = [c.strip() for c in caps or () if isinstance(c, str)]
        if "instances" in self.params:
            out["objects"] = coco_objects(anns or [], self.categories, width, height, issues,
                                          self.params["crowd"])
        return out
