"""Shared helpers for tasks over object instances: the categories in an image, plural nouns,
articles, and dataset-wide category statistics (frequency and co-occurrence) for POPE sampling."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from vlitc.records import Record

_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children",
              "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish",
              "knife": "knives", "skis": "skis", "scissors": "scissors", "glasses": "glasses",
              "foot": "feet", "tooth": "teeth", "goose": "geese", "leaf": "leaves",
              "shelf": "shelves", "wolf": "wolves", "skateboard": "skateboards"}


def plural(noun: str) -> str:
    """The plural of an English noun (category names, last word inflected)."""
    head, _, last = noun.rpartition(" ")
    low = last.lower()
    if low in _IRREGULAR:
        p = _IRREGULAR[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


def article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def present(rec: Record) -> set[str]:
    """Every category annotated in the image, crowd regions included."""
    return {o["category"] for o in rec.get("objects") or []}


def unique_objects(rec: Record) -> list[dict]:
    """Non-crowd objects whose category occurs once in the image (so "the cat" is unambiguous)."""
    objs = rec.get("objects") or []
    n = Counter(o["category"] for o in objs)
    return [o for o in objs if n[o["category"]] == 1 and not o.get("iscrowd")]


class CategoryStats:
    """Category frequency (images containing it) and co-occurrence counts over a dataset."""

    def __init__(self, records: Iterable[Record]):
        self.freq: Counter = Counter()
        self.cooc: dict[str, Counter] = defaultdict(Counter)
        for rec in records:
            cats = present(rec)
            self.freq.update(cats)
            for a in cats:
                for b in cats:
                    if a != b:
                        self.cooc[a][b] += 1

    def vocabulary(self) -> list[str]:
        return sorted(self.freq)

    def popular(self) -> list[str]:
        """Categories by how many images contain them, most first (ties by name)."""
        return [c for c, _ in sorted(self.freq.items(), key=lambda kv: (-kv[1], kv[0]))]

    def cooccurring(self, cats: Iterable[str]) -> list[str]:
        """Categories by how often they co-occur with any of ``cats``, most first."""
        total: Counter = Counter()
        for c in cats:
            total.update(self.cooc.get(c, {}))
        return [c for c, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]
