"""Visual Genome: region descriptions, objects with attributes, and relationships per image."""

from __future__ import annotations

from typing import Any

from vlitc.errors import InputError, Location
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.sources._common import (
    FILE,
    IMAGES,
    SAMPLING,
    AnnotationSource,
    Entry,
    Issues,
    fit_box,
    read_json,
    schema,
)
from vlitc.ops.sources.vqa import PATTERN, image_name

#: the per-image list each Visual Genome file holds, by param
LISTS = {"regions": "regions", "objects": "objects", "attributes": "attributes",
         "relationships": "relationships"}


def _box(o: dict) -> list[float]:
    x, y = float(o.get("x", 0)), float(o.get("y", 0))
    return [x, y, x + float(o.get("w", o.get("width", 0))), y + float(o.get("h", o.get("height", 0)))]


def _name(o: dict) -> str | None:
    names = o.get("names")
    return names[0] if names else o.get("name")


@register("source", "visual_genome")
class VisualGenomeSource(AnnotationSource):
    """Load Visual Genome files: region descriptions, objects (with attributes when the
    attributes file is given) and relationships, one record per image. ``id: coco`` keys records
    by their COCO image id (from ``image_data``) so they join with COCO sources.
    """

    version = 1
    file_params = ("image_data", "regions", "objects", "attributes", "relationships")
    writes = ("id", "image", "regions", "objects", "relations")
    params_schema = schema(
        {
            "image_data": FILE | {"description": "image_data.json (sizes, COCO ids)"},
            "regions": FILE | {"description": "region_descriptions.json"},
            "objects": FILE | {"description": "objects.json"},
            "attributes": FILE | {"description": "attributes.json (objects with attributes)"},
            "relationships": FILE | {"description": "relationships.json"},
            "id": {"enum": ["vg", "coco"], "default": "vg",
                   "description": "record id: the Visual Genome image id, or its COCO id"},
            "image_pattern": PATTERN | {"default": "{id}.jpg"},
            **IMAGES,
            **SAMPLING,
        },
        any_of=("regions", "objects", "attributes", "relationships"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        per_image: dict[Any, dict] = {}
        for param, key in LISTS.items():
            if param == "objects" and "attributes" in self.params:
                continue  # attributes.json holds the same objects, with attributes
            if param not in self.params:
                continue
            path = self.path(ctx, param)
            doc = read_json(path)
            if not isinstance(doc, list):
                raise InputError("expected a JSON array of images", Location(str(path), 1, 1))
            for item in doc:
                iid = item.get("image_id", item.get("id"))
                per_image.setdefault(iid, {})[key] = item.get(key) or []
        info = self._image_data(ctx)
        use_coco = self.params["id"] == "coco"
        pattern = self.params["image_pattern"]
        where = ctx.resolve(next(self.params[k] for k in self.file_params if k in self.params))
        out = []
        for iid, layers in per_image.items():
            im = info.get(iid, {})
            rid = im.get("coco_id") if use_coco else iid
            if rid is None:
                issues.add("no_coco_id", iid)
                continue
            out.append(Entry(str(rid), image_name(pattern, iid, where), im.get("width"),
                             im.get("height"), layers))
        return out

    def _image_data(self, ctx: OpContext) -> dict:
        if "image_data" not in self.params:
            if self.params["id"] == "coco":
                raise InputError("id: coco needs the image_data file (it holds the COCO ids)",
                                 hint="add image_data: image_data.json")
            return {}
        doc = read_json(self.path(ctx, "image_data"))
        return {im.get("image_id", im.get("id")): im for im in doc if isinstance(im, dict)}

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        out: dict[str, Any] = {}
        if "regions" in data:
            out["regions"] = []
            for r in data["regions"]:
                box = fit_box(_box(r), width, height, issues, r.get("region_id"))
                if box is not None:
                    out["regions"].append({"phrase": (r.get("phrase") or "").strip(),
                                           "bbox": box, "kind": "region",
                                           "id": r.get("region_id")})
        objs = data.get("attributes", data.get("objects"))
        rels = data.get("relationships")
        if objs is not None or rels is not None:
            out["objects"] = []
            index: dict[Any, int] = {}
            for o in objs or []:
                self._object(o, out["objects"], index, width, height, issues)
            if rels is not None:
                out["relations"] = self._relations(rels, out["objects"], index, width, height,
                                                   issues)
        return out

    def _object(self, o: dict, objects: list, index: dict, width: Any, height: Any,
                issues: Issues) -> int | None:
        oid = o.get("object_id", o.get("id"))
        if oid in index:
            return index[oid]
        box = fit_box(_box(o), width, height, issues, oid)
        if box is None:
            return None
        index[oid] = len(objects)
        objects.append({"id": oid, "category": _name(o), "bbox": box,
                        "attributes": [a.strip() for a in o.get("attributes") or []],
                        "iscrowd": False})
        return index[oid]

    def _relations(self, rels: list, objects: list, index: dict, width: Any, height: Any,
                   issues: Issues) -> list[dict]:
        out = []
        for r in rels:
            s = self._object(r.get("subject") or {}, objects, index, width, height, issues)
            o = self._object(r.get("object") or {}, objects, index, width, height, issues)
            if s is None or o is None:
                continue
            out.append({"subject": s, "predicate": (r.get("predicate") or "").strip().lower(),
                        "object": o, "id": r.get("relationship_id")})
        return out
