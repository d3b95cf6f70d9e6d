"""Text rules: word and turn bands per task, conversation structure, leaked template phrases,
n-gram repetition and empty or truncated answers. All model-free and cheap."""

from __future__ import annotations

import itertools
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


#: a line that is only a separator of the generator's output format ("===" between pairs)
SEPARATOR_LINE = re.compile(r"^[ \t]*(?:={2,}|-{3,}|#{3,})[ \t]*$", re.M)
#: a parser label left at the start of a line of an answer ("Question:", "Answer:")
LABEL_LINE = re.compile(r"(?:^|\n)[ \t]*(?:Question|Answer|Q|A|User|Assistant|Human|GPT)[ \t]*:",
                        re.I)


def separator_problems(s: Sample) -> list[str]:
    """Parser leftovers: separator lines ("==", "===") in any turn, and "Question:"/"Answer:"
    labels opening a line of an answer (the generator's format not fully split)."""
    out = []
    for i, t in enumerate(s.get("turns") or []):
        text = str(t.get("content", ""))
        m = SEPARATOR_LINE.search(text)
        if m:
            out.append(f"turn {i} has a separator line {m.group(0).strip()!r}")
        if t.get("role") == "assistant":
            m2 = LABEL_LINE.search(text)
            if m2:
                out.append(f"turn {i} has a parser label {m2.group(0).strip()!r}")
    return out


@register("filter", "structure")
class StructureFilter(_PerSample):
    """Drop samples whose conversation is malformed: roles must alternate user/assistant, end on
    an answer, no turn empty, one image placeholder per image (a single image's at the start of
    the first user turn), and (``separators``, on by default) no parser leftovers: separator
    lines ("==", "===") in any turn, "Question:"/"Answer:" labels opening a line of an answer.
    Reads: turns, image. Writes: stats.problems."""

    version = 2
    reads = ("turns", "image")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"separators": {"type": "boolean", "default": True}},
        "additionalProperties": False,
    }

    def measure_one(self, s: Sample) -> dict:
        problems = structure_problems(s)
        if self.params["separators"]:
            problems += separator_problems(s)
        return {"problems": problems}

    def keep(self, stats: dict) -> str | None:
        return "malformed conversation: " + "; ".join(stats["problems"]) if stats["problems"] else None


_LEAD = "{based on|according to|from|in|as described in|as mentioned in|as stated in|as per}"
_DET = "{the|the provided|the given|these|this}"
_GIVEN = ("{caption|captions|description|descriptions|image description|text description|"
          "annotations|bounding box|bounding boxes|bounding box coordinates|box coordinates|"
          "coordinates|given text}")

#: Phrases that betray the generator's prompt (it saw captions or a description, not the image),
#: written with ``{a|b}`` alternatives: what it was given after a lead ("based on the provided
#: captions", "according to the bounding box coordinates", "in the given description"), and the
#: assistant disclaimers.
DEFAULT_LEAKS = (
    f"{_LEAD} {_DET} {_GIVEN}",
    "{the provided|the given} {text|information|data|details}",
    f"{{the provided|the given}} {_GIVEN}",
    "the description",
    "the captions",
    "the bounding box coordinates",
    "as {an ai|an ai language model|a language model|a text-based ai}",
    "i {cannot|can't|am unable to|'m unable to} {see|view} {the image|images}",
    "i'm unable to view",
    "i don't have the ability to see",
)

_ALTS = re.compile(r"\{([^{}]*)\}")


def expand(phrase: str) -> list[str]:
    """Every phrase a ``{a|b}`` pattern stands for (``"as {an ai|a model}"`` -> 2 phrases)."""
    parts = _ALTS.split(phrase)
    options = [p.split("|") if i % 2 else [p] for i, p in enumerate(parts)]
    return [" ".join("".join(c).split()) for c in itertools.product(*options)]


def trie_pattern(phrases: list[str]) -> str:
    """One regular expression for a list of phrases (lower-cased; a space matches any spacing),
    written as the trie of their characters: at each position the engine follows the one branch
    the next character allows instead of trying every phrase in turn (hundreds of expanded
    variants cost what a few do). A phrase that another one extends matches the longer first."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for ch in phrase.lower():
            node = node.setdefault(ch, {})
        node[""] = {}  # a phrase ends here

    def walk(node: dict) -> str:
        alts = [(r"\s+" if ch == " " else re.escape(ch)) + walk(child)
                for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return walk(trie)


@register("filter", "leakage")
class LeakageFilter(_PerSample):
    """Drop samples whose answers contain leaked template phrases ("based on the provided
    captions", "according to the bounding box coordinates", "in the given description", "as an
    AI language model", ...: the default list holds their common variants), matched
    case-insensitively on word boundaries, any spacing.

    ``phrases`` replaces the default list; ``extra`` adds to it; ``{a|b}`` in a phrase stands for
    each alternative. Reads: turns (assistant).
    Writes: stats.leaks.
    """

    version = 2
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
        phrases = [x for p in [*self.params["phrases"], *self.params["extra"]] for x in expand(p)]
        self._re = re.compile(rf"(?<!\w)(?:{trie_pattern(phrases)})(?!\w)") if phrases else None

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
    if len(tokens) < n:
        return 0.0
    counts = Counter(zip(*(tokens[i:] for i in range(n)), strict=False))  # n-grams, by zip
    return sum(c for c in counts.values() if c > 1) / (len(tokens) - n + 1)


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


#: words a complete sentence does not end on (articles, prepositions, conjunctions, auxiliaries)
TRAILING_FUNCTION_WORDS = frozenset(
    "a an the and or but nor of to in on at by for with from into onto over under about as than "
    "that which who whose whom while because although though if so is are was were be been "
    "being has have had do does did can could will would should may might must its their his "
    "her our your my this these those such very".split()
)
SENTENCE_END = re.compile(r"""[.!?…:;)\]}"'”’»*`>]\s*$|[\U0001F300-\U0001FAFF\u2600-\u27BF]\s*$""")
PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("“", "”"))
_ENDERS = frozenset(""".!?…:;)]}"'”’»*`>""")


def _ends_sentence(tail: str) -> bool:
    """``SENTENCE_END.search(tail)`` for a text without trailing whitespace, from its last
    character alone (the expression would try every position of a long answer)."""
    c = tail[-1:]
    return c in _ENDERS or "\U0001F300" <= c <= "\U0001FAFF" or "\u2600" <= c <= "\u27BF"


def cut_off(text: str, min_words: int) -> str | None:
    """Why an answer looks cut off from its text alone, or ``None``: it ends on a function word,
    leaves a bracket, quote or code fence open, or (with at least ``min_words`` words) ends
    mid-sentence with no closing punctuation. Short answers ("Yes", "Two cats") pass."""
    body = text.strip()
    if not body:
        return None
    toks = WORD.findall(body) if body.isascii() else words(body)  # lower-casing keeps ASCII words
    tail = body
    last = toks[-1].lower() if toks else ""
    ended = _ends_sentence(tail)
    if len(toks) >= 3 and last in TRAILING_FUNCTION_WORDS and not ended:
        return f"ends on {last!r}"
    if body.count("```") % 2:
        return "unclosed code block"
    for a, b in PAIRS:
        if body.count(a) > body.count(b):
            return f"unclosed {a!r}"
    if body.count('"') % 2:
        return "unclosed quote"
    if body.rstrip().endswith((",", "-", "–", "—")):
        return "ends mid-sentence"
    if len(toks) >= min_words and not ended and not tail[-1:].isdigit():
        return "ends mid-sentence"
    return None


@register("filter", "truncated")
class TruncatedFilter(_PerSample):
    """Drop samples with an empty answer or one cut off: a finish reason in ``reasons`` (default
    ``length`` and ``max_tokens``, as ``generate`` records them in ``meta.finish_reasons``), or (``text``, on by default, for
    imported data that has no finish reason) an ending that the text alone shows: on a function
    word ("... next to the"), with a bracket, quote or code fence left open, or mid-sentence in
    an answer of at least ``min_words`` words.

    Reads: turns (assistant), meta.finish_reasons. Writes: stats.empty_turns,
    stats.finish_reasons, stats.cut_turns.
    """

    version = 2
    reads = ("turns", "meta.finish_reasons?")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "reasons": {"type": "array", "items": {"type": "string"},
                        "default": ["length", "max_tokens"],
                        "description": "finish reasons that mean cut off (OpenAI's length, "
                                       "Anthropic's max_tokens)"},
            "text": {"type": "boolean", "default": True},
            "min_words": {"type": "integer", "minimum": 1, "default": 8},
        },
        "additionalProperties": False,
    }
    keep_params = ("reasons", "text")

    def measure_one(self, s: Sample) -> dict:
        answers = assistant_turns(s)
        empty = [i for i, t in enumerate(answers) if not t.strip()]
        reasons: Any = (s.get("meta") or {}).get("finish_reasons") or []
        n = self.params["min_words"]
        cut = [{"turn": i, "why": why} for i, t in enumerate(answers)
               if (why := cut_off(t, n)) is not None]
        return {"empty_turns": empty, "finish_reasons": [str(r) for r in reasons], "cut_turns": cut}

    def keep(self, stats: dict) -> str | None:
        if stats["empty_turns"]:
            return f"empty answer in assistant turn(s) {stats['empty_turns']}"
        bad = set(self.params["reasons"])
        cut = [r for r in stats["finish_reasons"] if r in bad]
        if cut:
            return f"truncated answer: finish reason {cut[0]!r}"
        if self.params["text"] and stats.get("cut_turns"):
            c = stats["cut_turns"][0]
            return f"truncated answer {c['turn']}: {c['why']}"
        return None
