"""Spatial relations computed from box geometry: left of / right of, above / below, larger /
smaller than, asked as yes/no questions.

Only objects whose category occurs once in the image take part (so "the cat" names one thing).
A relation holds only with a clear margin; a pair whose boxes overlap along the axis in question
(or whose areas are within ``size_ratio`` of each other) is ambiguous and skipped. Each question
asks the true relation (answer yes) or its converse (answer no), chosen with the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import permutations

from vlitc import boxes
from vlitc.ops.base import OpContext
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import AdaptTask, Item, rng_for, task_schema
from vlitc.ops.tasks.objects import unique_objects
from vlitc.records import Record

CONVERSE = {"to the left of": "to the right of", "to the right of": "to the left of",
            "above": "below", "below": "above",
            "larger than": "smaller than", "smaller than": "larger than"}


def relations(a: list[float], b: list[float], size_ratio: float = 1.5) -> list[str]:
    """Relations that clearly hold between box ``a`` and box ``b`` (a is <relation> b)."""
    out = []
    if a[2] <= b[0]:
        out.append("to the left of")
    elif b[2] <= a[0]:
        out.append("to the right of")
    if a[3] <= b[1]:
        out.append("above")
    elif b[3] <= a[1]:
        out.append("below")
    aa, ab = boxes.area(a), boxes.area(b)
    if ab > 0 and aa >= size_ratio * ab:
        out.append("larger than")
    elif aa > 0 and ab >= size_ratio * aa:
        out.append("smaller than")
    return out


@register("task", "spatial")
class SpatialRelations(AdaptTask):
    """Yes/no questions about spatial relations between uniquely named objects, from their boxes."""

    version = 1
    default_pool = "spatial"
    provides = frozenset({"subject", "relation", "object"})
    required = (frozenset({"subject"}), frozenset({"relation"}), frozenset({"object"}))
    reads = ("image", "objects")
    params_schema = task_schema(
        ["yes_no", "short"], "yes_no",
        relations={"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"enum": ["left", "above", "larger"]}, "default": ["left", "above", "larger"]},
        size_ratio={"type": "number", "exclusiveMinimum": 1, "default": 1.5},
        per_image={"type": "integer", "minimum": 1, "default": 4},
    )

    def pairs(self, rec: Record) -> list[tuple[dict, dict, str]]:
        """``(subject, object, relation)`` for every clear relation of the chosen families."""
        want = self.params["relations"]
        fam = {"to the left of": "left", "to the right of": "left", "above": "above",
               "below": "above", "larger than": "larger", "smaller than": "larger"}
        ratio = float(self.params["size_ratio"])
        out = []
        for a, b in permutations(unique_objects(rec), 2):
            if a["category"] < b["category"]:  # one direction per pair; the converse covers the other
                out += [(a, b, r) for r in relations(a["bbox"], b["bbox"], ratio) if fam[r] in want]
        return out

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        rng = rng_for(ctx, self.label, rec["id"])
        pairs = self.pairs(rec)
        rng.shuffle(pairs)
        yes, no = self.format.answer("yes"), self.format.answer("no")
        for a, b, rel in pairs[: int(self.params["per_image"])]:
            truth = rng.random() < 0.5
            asked = rel if truth else CONVERSE[rel]
            yield Item(f"{a['category']}-{b['category']}-{rel.replace(' ', '_')}",
                       {"subject": a["category"], "relation": asked, "object": b["category"]},
                       yes if truth else no,
                       {"spatial": {"subject": a["bbox"], "object": b["bbox"], "relation": asked,
                                    "holds": truth}})
