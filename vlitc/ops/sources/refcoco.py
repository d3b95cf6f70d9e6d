"""RefCOCO / RefCOCO+ / RefCOCOg: referring expressions with the boxes of their COCO instances."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
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
    read_items,
    schema,
)
from vlitc.ops.sources.coco import CocoFile, coco_objects
from vlitc.ops.sources.vqa import group


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, numbers) and refuses any class or function,
    so a refs file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refs file references {module}.{name}; only plain data is read")


def read_refs(path: Path) -> list[dict]:
    """The refs list from ``refs(<split by>).p`` (pickle, read as data only) or JSON / JSON Lines."""
    if path.suffix.lower() not in (".p", ".pkl", ".pickle"):
        return [x for _, x in read_items(path, keys=("refs", "data"))]
    try:
        with open(path, "rb") as f:
            refs = _DataOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise InputError(f"cannot read refs pickle: {e}", Location(str(path)),
                         hint="give the refs(<split by>).p file of the dataset, or a JSON export") from None
    if not isinstance(refs, list):
        raise InputError("expected a list of refs", Location(str(path)))
    return refs


@register("source", "refcoco")
class RefCocoSource(AnnotationSource):
    """Load RefCOCO, RefCOCO+ or RefCOCOg: every referring sentence becomes a region with the
    pixel box of the instance it refers to; the record id is the COCO image id.
    """

    version = 1
    file_params = ("refs", "instances")
    writes = ("id", "image", "regions", "objects")
    params_schema = schema(
        {
            "refs": FILE | {"description": "refs(unc).p / refs(umd).p / refs(google).p, or JSON"},
            "instances": FILE | {"description": "the dataset's instances.json (COCO format)"},
            "objects": {"type": "boolean", "default": False,
                        "description": "also yield every instance of the image as an object"},
            **IMAGES,
            **SAMPLING,
            **SPLIT,
        },
        required=("refs", "instances"),
    )

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        refs = read_refs(self.path(ctx, "refs"))
        self.coco = CocoFile(self.path(ctx, "instances"), issues)
        out = []
        for iid, rs in group([(r.get("image_id"), r) for r in refs]).items():
            im = self.coco.images.get(iid)
            if im is None:
                issues.add("ref_unknown_image", {"ref_id": rs[0].get("ref_id"), "image_id": iid})
                continue
            out.append(Entry(str(iid), im[0], im[1], im[2], (iid, rs), rs[0].get("split")))
        return out

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        iid, refs = data
        anns = self.coco.by_image.get(iid, [])
        objects = coco_objects(anns, self.coco.categories, width, height, issues)
        by_ann = {o["id"]: o for o in objects}
        regions = []
        for r in refs:
            obj = by_ann.get(r.get("ann_id"))
            if obj is None:
                issues.add("ref_unknown_instance", {"ref_id": r.get("ref_id"),
                                                    "ann_id": r.get("ann_id")})
                continue
            for s in r.get("sentences") or []:
                phrase = (s.get("raw") or s.get("sent") or "").strip()
                if phrase:
                    regions.append({"phrase": phrase, "bbox": obj["bbox"], "kind": "ref",
                                    "category": obj["category"], "ref_id": r.get("ref_id"),
                                    "ann_id": r.get("ann_id")})
        out: dict[str, Any] = {"regions": regions}
        if self.params["objects"]:
            out["objects"] = objects
        return out
