"""Text rules: word and turn bands per task, conversation structure, leaked template phrases,
n-gram repetition and empty or truncated answers. All model-free and cheap."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, ClassVar

from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import Sample, structure_problems

WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)

_BAND: dict[str, Any] = {
    "type": "object",
    "properties": {"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
}


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a text."""
    return WORD.findall(text.lower())


def assistant_turns(s: Sample) -> list[str]:
    return [str(t.get("content", "")) for t in s.get("turns") or [] if t.get("role") == "assistant"]


def band_reason(value: int, band: dict, what: str) -> str | None:
    """Why ``value`` falls outside ``band`` (``{"min", "max"}``), or ``None`` when inside."""
    lo, hi = band.get("min"), band.get("max")
    if lo is not None and value < lo:
        return f"{value} {what} < min {lo}"
    if hi is not None and value > hi:
        return f"{value} {what} > max {hi}"
    return None


class _PerSample(Filter):
    """An item filter whose stats depend on one sample only."""

    cache_items = False  # a text rule is cheaper than a cache lookup

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        return [self.measure_one(s) for s in samples]

    def measure_one(self, s: Sample) -> dict:
        raise NotImplementedError


class _Band(_PerSample):
    """A count that must lie in a band, with optional per-task bands."""

    what: ClassVar[str] = ""
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            **_BAND["properties"],
            "per_task": {"type": "object", "additionalProperties": _BAND},
        },
        "additionalProperties": False,
    }
    keep_params: ClassVar[tuple[str, ...]] = ("min", "max", "per_task")

    def band(self, task: str) -> dict:
        per_task = self.params.get("per_task") or {}
        if task in per_task:
            return per_task[task]
        return {k: self.params[k] for k in ("min", "max") if k in self.params}

    def keep(self, stats: dict) -> str | None:
        return band_reason(stats[self.what], self.band(stats.get("task", "")), self.what)


@register("filter", "words")
class WordsFilter(_Band):
    """Drop samples whose answers' total word count lies outside a band (per task if given).

    Reads: turns (assistant), task. Writes: stats.words, stats.min_turn_words.
    """

    version = 1
    what = "words"
    reads = ("turns", "task")
    writes = ("meta.stats",)

    def measure_one(self, s: Sample) -> dict:
        counts = [len(words(t)) for t in assistant_turns(s)]
        return {"task": s.get("task", ""), "words": sum(counts), "min_turn_words": min(counts, default=0)}


@register("filter", "min_words")
class MinWordsFilter(WordsFilter):
    """Drop samples whose answers have fewer than ``min`` words in all (``per_task`` overrides).

    Reads: turns (assistant), task. Writes: stats.words.
    """

    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "min": {"type": "integer", "minimum": 0},
            "per_task": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        },
        "required": ["min"],
        "additionalProperties": False,
    }
    keep_params = ("min", "per_task")

    def band(self, task: str) -> dict:
        return {"min": (self.params.get("per_task") or {}).get(task, self.params["min"])}


@register("filter", "turns")
class TurnsFilter(_Band):
    """Drop samples whose number of exchanges (assistant turns) lies outside a band.

    Reads: turns, task. Writes: stats.turns.
    """

    version = 1
    what = "turns"
    reads = ("turns", "task")
    writes = ("meta.stats",)

    def measure_one(self, s: Sample) -> dict:
        return {"task": s.get("task", ""), "turns": len(assistant_turns(s))}


@register("filter", "structure")
class StructureFilter(_PerSample):
    """Drop samples whose conversation is malformed: roles must alternate user/assistant, end on
    an answer, no turn empty, and the image placeholder appear exactly once, at the start of the
    first user turn. Reads: turns, image. Writes: stats.problems."""

    version = 1
    reads = ("turns", "image")
    writes = ("meta.stats",)

    def measure_one(self, s: Sample) -> dict:
        return {"problems": structure_problems(s)}

    def keep(self, stats: dict) -> str | None:
        return "malformed conversation: " + "; ".join(stats["problems"]) if stats["problems"] else None


#: Phrases that betray the generator's prompt (it saw captions or a description, not the image).
DEFAULT_LEAKS = (
    "the given text",
    "the given description",
    "the description",
    "the provided description",
    "based on the caption",
    "based on the description",
    "according to the caption",
    "according to the description",
    "the captions",
    "the bounding box coordinates",
    "as an ai",
    "i cannot see the image",
    "i'm unable to view",
)


@register("filter", "leakage")
class LeakageFilter(_PerSample):
    """Drop samples whose answers contain leaked template phrases ("based on the caption",
    "as an AI", ...), matched case-insensitively on word boundaries.

    ``phrases`` replaces the default list; ``extra`` adds to it. Reads: turns (assistant).
    Writes: stats.leaks.
    """

    version = 1
    reads = ("turns",)
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "phrases": {"type": "array", "items": {"type": "string", "minLength": 1},
                        "default": list(DEFAULT_LEAKS)},
            "extra": {"type": "array", "items": {"type": "string", "minLength": 1}, "default": []},
        },
        "additionalProperties": False,
    }

    def __init__(self, params: dict, label: str = ""):
        super().__init__(params, label)
        phrases = list(self.params["phrases"]) + list(self.params["extra"])
        alts = "|".join(re.escape(p.lower()).replace(r"\ ", r"\s+") for p in phrases)
        self._re = re.compile(rf"(?<!\w)(?:{alts})(?!\w)") if phrases else None

    def measure_one(self, s: Sample) -> dict:
        if self._re is None:
            return {"leaks": []}
        text = "\n".join(assistant_turns(s)).lower().replace("’", "'")
        found = [" ".join(m.group(0).split()) for m in self._re.finditer(text)]
        return {"leaks": sorted(set(found))}

    def keep(self, stats: dict) -> str | None:
        leaks = stats["leaks"]
        return "leaked template phrase: " + ", ".join(repr(p) for p in leaks) if leaks else None


def repetition_ratio(tokens: list[str], n: int) -> float:
    """Share of a text's word n-grams that belong to an n-gram occurring more than once."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams)


@register("filter", "repetition")
class RepetitionFilter(_PerSample):
    """Drop samples with degenerate repetition: the share of repeated word ``n``-grams within an
    answer (the worst answer counts) above ``max_ratio``. Reads: turns (assistant).
    Writes: stats.repetition, stats.worst_turn."""

    version = 1
    reads = ("turns",)
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "default": 4},
            "max_ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
        },
        "additionalProperties": False,
    }
    keep_params = ("max_ratio",)

    def measure_one(self, s: Sample) -> dict:
        n = self.params["n"]
        ratios = [repetition_ratio(words(t), n) for t in assistant_turns(s)]
        worst = max(range(len(ratios)), key=ratios.__getitem__, default=-1)
        return {"repetition": round(ratios[worst], 4) if ratios else 0.0, "worst_turn": worst}

    def keep(self, stats: dict) -> str | None:
        limit = self.params["max_ratio"]
        if stats["repetition"] > limit:
            n = self.params["n"]
            return (f"repetitive answer {stats['worst_turn']}: {stats['repetition']:.2f} of its "
                    f"{n}-grams repeat (> {limit})")
        return None


@register("filter", "truncated")
class TruncatedFilter(_PerSample):
    """Drop samples with an empty answer or one the generator cut off (a finish reason in
    ``reasons``, default ``length``, as recorded in ``meta.finish_reasons``).

    Reads: turns (assistant), meta.finish_reasons. Writes: stats.empty_turns, stats.finish_reasons.
    """

    version = 1
    reads = ("turns", "meta.finish_reasons?")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "reasons": {"type": "array", "items": {"type": "string"}, "default": ["length"]},
        },
        "additionalProperties": False,
    }
    keep_params = ("reasons",)

    def measure_one(self, s: Sample) -> dict:
        empty = [i for i, t in enumerate(assistant_turns(s)) if not t.strip()]
        reasons: Any = (s.get("meta") or {}).get("finish_reasons") or []
        return {"empty_turns": empty, "finish_reasons": [str(r) for r in reasons]}

    def keep(self, stats: dict) -> str | None:
        if stats["empty_turns"]:
            return f"empty answer in assistant turn(s) {stats['empty_turns']}"
        bad = set(self.params["reasons"])
        cut = [r for r in stats["finish_reasons"] if r in bad]
        return f"truncated answer: finish reason {cut[0]!r}" if cut else None
