"""The ``join`` source: records of several sources that describe the same image, merged by id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vlitc.ops.base import OpContext, Source
from vlitc.ops.registry import register
from vlitc.records import ANNOTATION_LAYERS, Record


def merge_into(base: Record, other: Record, ctx: OpContext) -> None:
    """Add ``other``'s layers to ``base`` (same image): lists concatenate, relation indices shift
    with the objects they point at, the first image reference wins, meta keys fill gaps."""
    shift = len(base.get("objects") or [])
    for layer in ANNOTATION_LAYERS:
        items = other.get(layer)
        if not items:
            continue
        if layer == "relations" and shift:
            items = [{**r, "subject": r["subject"] + shift, "object": r["object"] + shift}
                     for r in items]
        base.setdefault(layer, []).extend(items)
    img, oimg = base.get("image"), other.get("image")
    if img is None and oimg is not None:
        base["image"] = oimg
    elif img and oimg and img.get("sha256") and oimg.get("sha256") and \
            img["sha256"] != oimg["sha256"]:
        ctx.count("join_image_conflict")
    sources = base["source"].split("+")
    if other["source"] not in sources:
        base["source"] = "+".join([*sources, other["source"]])
    meta = base.setdefault("meta", {})
    for k, v in (other.get("meta") or {}).items():
        meta.setdefault(k, v)


@register("source", "join")
class JoinSource(Source):
    """Join the records of several sources on their id (the image), one record per image with
    every source's layers. ``how``: ``left`` keeps the first source's images, ``inner`` only
    images every source has, ``outer`` all of them.
    """

    version = 1
    reads = ("id",)
    writes = ("id",)
    keeps_input_fields = True  # every layer its sources write
    params_schema = {
        "type": "object",
        "properties": {
            "sources": {"type": "array", "items": {"type": "string", "minLength": 1},
                        "minItems": 2, "uniqueItems": True,
                        "description": "the sources to join, by name; the first leads"},
            "how": {"enum": ["left", "inner", "outer"], "default": "left"},
        },
        "required": ["sources"],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        return {"source": list(self.params["sources"])}

    def count(self, ctx: OpContext, inputs: list[int]) -> int | None:
        """An upper bound from the joined sources' counts: the first one's (``left``), the
        smallest (``inner``) or their sum (``outer``)."""
        if not inputs:
            return None
        how = self.params["how"]
        return inputs[0] if how == "left" else min(inputs) if how == "inner" else sum(inputs)

    def load(self, ctx: OpContext) -> Iterator[Record]:
        how = self.params["how"]
        names = self.params["sources"]
        merged: dict[str, Record] = {}
        for rec in ctx.input(f"source:{names[0]}"):
            if rec["id"] in merged:
                ctx.count("duplicate_id")
                merge_into(merged[rec["id"]], rec, ctx)
            else:
                merged[rec["id"]] = rec
        hits: dict[str, int] = dict.fromkeys(merged, 1)
        for name in names[1:]:
            self._join_one(name, merged, hits, how, ctx)
        matched = 0
        for rid, rec in merged.items():
            if how == "inner" and hits[rid] < len(names):
                continue
            matched += hits[rid] > 1
            yield rec
        ctx.count("joined_records", matched)

    def _join_one(self, name: str, merged: dict, hits: dict, how: str, ctx: OpContext) -> None:
        seen: set[str] = set()
        unmatched: list[Any] = []
        for rec in ctx.input(f"source:{name}"):
            rid = rec["id"]
            if rid in merged:
                merge_into(merged[rid], rec, ctx)
                if rid not in seen:
                    hits[rid] += 1
                    seen.add(rid)
            elif how == "outer":
                merged[rid] = rec
                hits[rid] = 1
                seen.add(rid)
            else:
                ctx.count(f"unmatched:{name}")
                if len(unmatched) < 5:
                    unmatched.append(rid)
        if unmatched:
            ctx.note(f"unmatched:{name}", {"count": ctx.counters[f"unmatched:{name}"],
                                           "examples": unmatched})
