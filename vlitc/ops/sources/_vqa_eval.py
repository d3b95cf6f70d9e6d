"""The VQA evaluation's answer accuracy, used to pick a question's consensus answer.

The official VQA v2 evaluation scores a predicted answer against the ten human answers as the
mean, over the ten leave-one-out subsets of nine humans, of ``min(#humans in the subset who gave
that answer / 3, 1)``. Answers are stripped; when the humans did not all agree, the prediction and
the human answers are normalised (punctuation, then lower case, number words to digits, articles
dropped, contractions restored) before comparing. The consensus answer of a question is the human answer with
the highest accuracy under that metric (ties go to the dataset's ``multiple_choice_answer``, then
to the earliest answer).
"""

from __future__ import annotations

import re
from functools import lru_cache

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_NUM = re.compile(r"(\d)(,)(\d)")

# Contractions the evaluation restores: a word written with exactly one of its apostrophes left
# out maps back to the full form ("dont" -> "don't", "couldnt've" -> "couldn't've").
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've "
    "it'll ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't "
    "'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll "
    "somebody's someone'd someone'd've someone'll someone's something'd something'd've "
    "something'll that's there'd there'd've there're there's they'd they'd've they'll they're "
    "they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd "
    "where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CONTRACTED:
        cuts = [i for i, ch in enumerate(word) if ch == "'"]
        for i in cuts:
            table[word[:i] + word[i + 1:]] = word
    table["somebody'd"] = "somebodyd"  # as the evaluation has it
    return table


_CONTRACTIONS = _contraction_table()


def process_punctuation(text: str) -> str:
    """The evaluation's punctuation step: strip or space out punctuation, drop bare periods."""
    out = text
    comma_num = _COMMA_NUM.search(text) is not None
    for p in _PUNCT:
        if comma_num or (p + " " in text or " " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, 32)  # the evaluation passes re.UNICODE (32) as the count


def process_digit_article(text: str) -> str:
    """The evaluation's word step: lower case, number words to digits, no articles."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """An answer as the evaluation normalises it before comparing."""
    return process_digit_article(process_punctuation(text))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def accuracy(matches: int, n: int) -> float:
    """Leave-one-out VQA accuracy of an answer that ``matches`` of ``n`` humans gave."""
    if n == 0:
        return 0.0
    inside = matches * min(1.0, (matches - 1) / 3.0) if matches else 0.0
    return (inside + (n - matches) * min(1.0, matches / 3.0)) / n


_PAIRS: dict[str, tuple[str, str]] = {}


def _pair(answer: str) -> tuple[str, str]:
    """``(stripped, normalised)`` forms of an answer, memoised (answers repeat a lot)."""
    got = _PAIRS.get(answer)
    if got is None:
        if len(_PAIRS) > 500_000:
            _PAIRS.clear()
        clean = _clean(answer)
        got = _PAIRS[answer] = (clean, normalize_answer(clean))
    return got


@lru_cache(maxsize=1024)
def _score(matches: int, n: int) -> float:
    return round(accuracy(matches, n), 4)


def consensus(answers: list[str], mc_answer: str | None = None) -> tuple[str | None, float]:
    """The human answer with the highest VQA accuracy, and that accuracy.

    Accuracy grows with the number of matching humans, so the best answer is one whose
    (normalised) form is the most frequent.
    """
    n = len(answers)
    if not n:
        return mc_answer, 0.0
    raw: dict[str, int] = {}
    for a in answers:
        raw[a] = raw.get(a, 0) + 1
    if len(raw) == 1:
        return answers[0], _score(n, n)
    memo = _PAIRS
    pairs = {a: memo.get(a) or _pair(a) for a in raw}
    idx = 1 if len({p[0] for p in pairs.values()}) > 1 else 0
    counts: dict[str, int] = {}
    for a, c in raw.items():
        k = pairs[a][idx]
        counts[k] = counts.get(k, 0) + c
    top = max(counts.values())
    if mc_answer in raw and counts[pairs[mc_answer][idx]] == top:
        return mc_answer, _score(top, n)
    return next(a for a in raw if counts[pairs[a][idx]] == top), _score(top, n)
