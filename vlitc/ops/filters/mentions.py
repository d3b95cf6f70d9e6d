"""Find what a text claims about an image: object mentions (mapped to COCO categories with the
package's synonym table), denials, stated counts, written boxes and quoted text.

Matching is longest-phrase-first over lower-cased tokens, so "hot dog" is a hot dog and not a
dog, and "microwave oven" is a microwave and not an oven. A mention is *denied* when a negation
opens its clause ("there is no dog", "without any cats", "not a dog") or closes it ("the dog is
not visible"). A word used as a modifier of a place or part ("bus stop", "train tracks",
"ski slope") is not a mention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
BOUNDARY = frozenset(".,;:!?()\"“”")
SENTENCE_END = frozenset(".;!?")
NEGATIONS = frozenset(
    "no not without never nor neither none isn aren wasn weren doesn don didn cannot lacks "
    "lacking absence".split()
)
PRESENCE = frozenset(
    "visible present seen shown there pictured depicted found included spotted observed "
    "apparent noticeable anywhere in".split()
)
#: A mention followed by one of these names a place or part, not the object ("bus stop").
COMPOUND_HEADS = frozenset(
    "stop stops station stations stand stands track tracks rails platform court courts field "
    "fields park ramp slope slopes lift lifts resort pole poles lane lanes crossing area shop "
    "store food rack racks seat seats box boxes paper house cage feeder trail path boots suit "
    "jacket gear goggles mask run runs surfing surfer boarding tennis cloth cutter booth location "
    "locations depot terminal garage wash route routes window windows carrier carriers".split()
)
#: Phrases that contain a synonym but name no COCO object.
NON_OBJECTS = ("oven mitt", "glove box", "hot tub", "table tennis", "dog bed", "cat bed")
#: After these, a colour word is still the fruit ("an orange and a banana").
FUNCTION_WORDS = frozenset(
    "and or on in with is are was were sits sitting next near of that which to from at by "
    "beside under over lying laying placed has have for while as the a an slices slice half "
    "halves wedges peel".split()
)
COLOUR_WORDS = frozenset({"orange"})
OTHER_COLOURS = frozenset(
    "white black brown red green blue yellow pink purple gray grey tan silver gold".split()
)
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
#: Words that make a clause hypothetical or generic ("people may use the umbrella for shade",
#: "if a dog were there"): its mentions are not claims about the image.
HEDGES = frozenset(
    "may might could would should can if unless whether possibly perhaps maybe likely unlikely "
    "potential potentially probably typically usually generally commonly often such example "
    "instance imagine ensure recommend recommended consider important essential avoid".split()
)
#: Roles a reasoning answer infers from the scene ("the driver parked the car", "invites people
#: to try"): they name no one visible unless their sentence says someone is seen or doing
#: something there.
ROLE_NOUNS = frozenset(
    "people person driver drivers owner owners passenger passengers customer customers visitor "
    "visitors user users human humans companion companions individual individuals someone "
    "anyone everyone viewer viewers".split()
)
#: Words that put a role noun's person in the picture ("a driver is visible", "sitting").
SCENE_WORDS = frozenset(
    "visible seen see shown pictured depicted standing sitting holding wearing riding walking "
    "looking image picture photo scene foreground background there".split()
)
#: After a modal, these verbs make it a claim again ("you can see a dog").
PERCEPTION = frozenset("see seen spot spotted notice noticed observe observed tell find".split())
#: Categories whose name is a pair noun: "two skis" is one pair, so counts are not checked.
UNCOUNTED = frozenset({"skis", "scissors"})
IRREGULAR_END = ("s", "x", "ch", "sh", "z")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower().replace("’", "'"))


def plural(word: str) -> str:
    if word.endswith(IRREGULAR_END):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass(frozen=True)
class Vocabulary:
    """Phrase (token tuple) -> COCO category, plus the longest phrase length."""

    phrases: dict[tuple[str, ...], str | None]
    longest: int
    #: first token of a phrase -> the longest phrase starting with it (most tokens start none)
    first: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: dict[str, int] = {}
        for p in self.phrases:
            first[p[0]] = max(first.get(p[0], 0), len(p))
        object.__setattr__(self, "first", first)

    @classmethod
    def from_table(cls, text: str) -> Vocabulary:
        phrases: dict[tuple[str, ...], str | None] = {}
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            category, _, rest = line.partition("\t")
            for phrase in [category, *rest.split(",")]:
                toks = tokens(phrase.strip())
                if toks:
                    phrases.setdefault(tuple(toks), category.strip())
                    phrases.setdefault((*toks[:-1], plural(toks[-1])), category.strip())
        for phrase in NON_OBJECTS:
            phrases[tuple(tokens(phrase))] = None
        return cls(phrases, max(len(p) for p in phrases))

    @property
    def categories(self) -> set[str]:
        return {c for c in self.phrases.values() if c}


@lru_cache(maxsize=8)
def vocabulary(path: str | None = None) -> Vocabulary:
    """The synonym table shipped with the package, or one given as a file path."""
    if path is None:
        text = resources.files("vlitc").joinpath("data/coco_synonyms.tsv").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return Vocabulary.from_table(text)


@dataclass
class Mention:
    category: str
    start: int
    end: int
    phrase: str
    denied: bool = False
    count: int | None = None
    generic: bool = False


@dataclass
class Claims:
    """Everything checkable that a text says."""

    mentions: list[Mention] = field(default_factory=list)
    boxes: list[tuple[list[float], str | None]] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)


BOX = re.compile(
    r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,"
    r"\s*(-?\d+(?:\.\d+)?)\s*[\])]"
)
QUOTE = re.compile(r"\"([^\"\n]{1,80})\"|“([^”\n]{1,80})”|(?<![\w])'([^'\n]{1,80})'(?![\w])")
BOX_TOKEN = "qqboxqq"  # letters only, so the tokenizer keeps it whole; boxes come in order


def _is_modifier(toks: list[str], start: int, end: int) -> bool:
    nxt = toks[end] if end < len(toks) else ""
    if nxt in COMPOUND_HEADS:
        return True
    if nxt == "-" and end + 1 < len(toks) and toks[end + 1].isalpha():
        return True  # a hyphenated compound: "cake-style", "dog-friendly"
    if end - start == 1 and toks[start] in COLOUR_WORDS:
        after = toks[end + 1] if end + 1 < len(toks) else ""
        if nxt in ("and", "or") and after in OTHER_COLOURS:
            return True  # "an orange and white cat"
        return nxt.isalpha() and nxt not in FUNCTION_WORDS
    return False


def match(toks: list[str], vocab: Vocabulary) -> list[Mention]:
    """Longest-first phrase matches, without modifiers and non-object phrases."""
    found: list[tuple[int, int, str | None]] = []
    first, phrases, size = vocab.first, vocab.phrases, len(toks)
    after = 0  # the end of the last match: a phrase starts at or after it
    for i in [i for i, t in enumerate(toks) if t in first]:  # tokens that start a phrase
        if i < after:
            continue
        for n in range(min(first[toks[i]], size - i), 0, -1):
            key = tuple(toks[i : i + n])
            if key in phrases:
                found.append((i, i + n, phrases[key]))
                after = i + n
                break
    starts = {s for s, _, _ in found}
    return [  # a mention right before another one modifies it ("baby elephant", "cake donuts")
        Mention(cat, s, e, " ".join(toks[s:e]))
        for s, e, cat in found
        if cat and e not in starts and not _is_modifier(toks, s, e)
    ]


def _denied(toks: list[str], m: Mention) -> bool:
    j = m.start - 1
    while j >= 0 and m.start - j <= 6 and toks[j] not in BOUNDARY:
        if toks[j] in NEGATIONS:
            return True
        j -= 1
    after: list[str] = []
    for t in toks[m.end : m.end + 6]:
        if t in BOUNDARY:
            break
        after.append(t)
    for k, t in enumerate(after):
        if t in NEGATIONS or t == "t" and k and after[k - 1] == "'":
            return any(w in PRESENCE for w in after[k + 1 : k + 4])
    return False


def _hedge_at(toks: list[str], j: int) -> bool:
    t = toks[j]
    if t not in HEDGES:
        return False
    nxt = toks[j + 1 : j + 3]
    return not any(w in PERCEPTION for w in nxt)  # "can see", "could be seen" are claims


class _Clauses:
    """What :func:`_generic` asks of one text's tokens, found in one pass: the hedges, whether a
    hedge comes earlier in a token's sentence, and each sentence's words (read only for role
    nouns), so that a text with many mentions is not walked again for each."""

    def __init__(self, toks: list[str]):
        self.toks = toks
        self.hedged = not HEDGES.isdisjoint(toks)  # most texts hedge nothing: nothing to find
        self.hedge: list[bool] = []
        self.before: list[bool] = []  # a hedge earlier in the token's sentence
        if self.hedged:
            self.hedge = [t in HEDGES and _hedge_at(toks, j) for j, t in enumerate(toks)]
            hedged = False
            for t, h in zip(toks, self.hedge, strict=True):
                self.before.append(hedged)
                if t in SENTENCE_END:
                    hedged = False
                elif h:
                    hedged = True
        self._sentence: list[int] = []  # the sentence a token is in (its end included)
        self._words: dict[int, set[str]] = {}  # sentence -> its words

    def words(self, i: int) -> set[str]:
        """The words of token ``i``'s sentence, without the token that ends it."""
        if not self._sentence:  # every sentence's words, in one pass
            words: set[str] = set()
            self._words[0] = words
            for t in self.toks:
                self._sentence.append(len(self._words) - 1)
                if t in SENTENCE_END:
                    words = self._words[len(self._words)] = set()
                else:
                    words.add(t)
        return self._words[self._sentence[i]]


def _generic(toks: list[str], m: Mention, clauses: _Clauses | None = None) -> bool:
    """A mention in a hypothetical or generic clause: a hedge (modal, "if", "such as",
    "typically"...) earlier in its sentence or within three words after it; or a role a
    reasoning answer infers ("the driver", "people") in a sentence that puts no one in view."""
    c = clauses or _Clauses(toks)
    if m.phrase in ROLE_NOUNS and not SCENE_WORDS & c.words(m.start):
        return True
    if not c.hedged:
        return False
    if c.before[m.start]:
        return True
    for k in range(m.end, min(m.end + 3, len(toks))):
        if toks[k] in SENTENCE_END:
            break
        if c.hedge[k]:
            return True
    return False


def _count(toks: list[str], m: Mention, mention_ends: set[int]) -> int | None:
    j, skipped = m.start - 1, 0
    while j >= 0 and skipped <= 2:
        t = toks[j]
        if t.isdigit():
            return int(t)
        if t in NUMBER_WORDS:
            return NUMBER_WORDS[t]
        if not t.isalpha() or t in FUNCTION_WORDS or (j + 1) in mention_ends:
            return None
        j, skipped = j - 1, skipped + 1
    return None


def claims(text: str, vocab: Vocabulary) -> Claims:
    """Parse a text into mentions (with denials and counts), written boxes and quotes."""
    out = Claims()
    out.quotes = [next(g for g in m.groups() if g is not None) for m in QUOTE.finditer(text)]
    boxes: list[list[float]] = []

    def _box(m: re.Match) -> str:
        boxes.append([float(v) for v in m.groups()])
        return f" {BOX_TOKEN} "

    toks = tokens(BOX.sub(_box, text))
    out.mentions = match(toks, vocab)
    ends = {m.end for m in out.mentions}
    clauses = _Clauses(toks) if out.mentions else None
    negated = not NEGATIONS.isdisjoint(toks) or "t" in toks  # else nothing is denied
    for m in out.mentions:
        m.denied = negated and _denied(toks, m)
        m.generic = _generic(toks, m, clauses)
        if m.category not in UNCOUNTED:
            m.count = _count(toks, m, ends)
    at = [pos for pos, t in enumerate(toks) if t == BOX_TOKEN]
    out.boxes = [(box, _box_owner(toks, pos, out.mentions)) for box, pos in zip(boxes, at, strict=False)]
    return out


def _box_owner(toks: list[str], pos: int, mentions: list[Mention]) -> str | None:
    """The category of the nearest mention before a box in the same sentence (12 tokens)."""
    best = None
    for m in mentions:
        if m.end <= pos and pos - m.end <= 12 and not any(
            t in SENTENCE_END for t in toks[m.end : pos]
        ):
            best = m
    return best.category if best else None


def words_of(text: str) -> list[str]:
    return [t for t in tokens(text) if t.isalnum()]
