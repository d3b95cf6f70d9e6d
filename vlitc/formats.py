"""Response formats as first-class objects: what the prompt asks for and what the answer must be.

LLaVA-1.5 made short-answer academic data usable without teaching the model to always answer
curtly by appending a *format prompt* that states the expected form ("Answer the question using
a single word or phrase."). A format here is that prompt plus the rules of its answers:

* :meth:`ResponseFormat.instruct` appends the format prompt to an instruction;
* :meth:`ResponseFormat.answer` writes an answer value in the format;
* :meth:`ResponseFormat.problem` says what is wrong with a response text (``None`` when it fits).

Box formats also encode and decode boxes (:meth:`BoxFormat.encode`, :meth:`BoxFormat.decode`),
so that every box written into an answer can be checked to round-trip to the annotated box.
Besides the bare ``[x1, y1, x2, y2]`` conventions, each model family's own grounding syntax is a
box format (:class:`TaggedBox`): Qwen-VL ``<ref>..</ref><box>(x1,y1),(x2,y2)</box>``, Qwen2-VL
``<|object_ref_start|>..<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`` and InternVL
``<ref>..</ref><box>[[x1, y1, x2, y2]]</box>``, all on integers 0-1000.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Sequence

from vlitc import boxes
from vlitc.errors import InputError

LETTERS = string.ascii_uppercase
_BOX_RE = re.compile(
    r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]"
)
_SENTENCE_END = re.compile(r"[.!?](?:\s+|$)")


class ResponseFormat:
    """Free-form responses: no format prompt; any non-empty text fits."""

    name = "free"
    prompt = ""

    def instruct(self, instruction: str) -> str:
        """The instruction followed by this format's prompt on its own line."""
        if not self.prompt or self.prompt in instruction:
            return instruction
        return f"{instruction}\n{self.prompt}"

    def answer(self, value: object) -> str:
        return str(value).strip()

    def problem(self, text: str) -> str | None:
        return None if text.strip() else "empty response"

    def __repr__(self) -> str:
        return f"<format {self.name}>"


class ShortAnswer(ResponseFormat):
    """A single word or phrase (VQA-style answers), as LLaVA-1.5 prompts for."""

    name = "short"
    prompt = "Answer the question using a single word or phrase."
    max_words = 6

    def answer(self, value: object) -> str:
        return str(value).strip().rstrip(".")

    def problem(self, text: str) -> str | None:
        t = text.strip()
        if not t:
            return "empty response"
        if "\n" in t or len(t.split()) > self.max_words:
            return f"not a single word or phrase ({len(t.split())} words)"
        return None


class MultipleChoice(ResponseFormat):
    """Lettered options in the prompt; the answer is the option's letter alone."""

    name = "multiple_choice"
    prompt = "Answer with the option's letter from the given choices directly."

    @staticmethod
    def options(choices: Sequence[str]) -> str:
        """``A. first\\nB. second...`` for the prompt."""
        if len(choices) > len(LETTERS):
            raise ValueError(f"{len(choices)} choices; at most {len(LETTERS)}")
        return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))

    def answer(self, value: object) -> str:
        """The letter of option index ``value`` (an int), or a letter passed through."""
        if isinstance(value, int):
            return LETTERS[value]
        return str(value).strip()

    def problem(self, text: str) -> str | None:
        t = text.strip()
        return None if len(t) == 1 and t in LETTERS else f"not an option letter: {t[:20]!r}"


class OneSentence(ResponseFormat):
    """A one-sentence caption (LLaVA-1.5's prompt for short COCO captions)."""

    name = "one_sentence"
    prompt = "Provide a one-sentence caption for the provided image."

    def answer(self, value: object) -> str:
        t = " ".join(str(value).split())
        if t and t[0].islower():
            t = t[0].upper() + t[1:]
        return t if t.endswith((".", "!", "?")) else t + "."

    def problem(self, text: str) -> str | None:
        t = text.strip()
        if not t:
            return "empty response"
        n = len(_SENTENCE_END.findall(t))
        return None if n <= 1 and "\n" not in t else f"{n} sentences, expected one"


class YesNo(ResponseFormat):
    """``Yes`` or ``No``."""

    name = "yes_no"
    prompt = "Please answer yes or no."

    def answer(self, value: object) -> str:
        if isinstance(value, bool):
            return "Yes" if value else "No"
        t = str(value).strip().rstrip(".").lower()
        if t not in ("yes", "no"):
            raise ValueError(f"not a yes/no answer: {value!r}")
        return t.capitalize()

    def problem(self, text: str) -> str | None:
        return None if text.strip() in ("Yes", "No") else f"not Yes/No: {text.strip()[:20]!r}"


class BoxFormat(ResponseFormat):
    """A box written as ``[x1, y1, x2, y2]`` in a declared coordinate convention.

    ``square``: LLaVA-1.5, normalised to the image padded to a square, two decimals;
    ``normalized``: 0-1 of width and height, three decimals; ``thousand``: integers 0-1000.
    """

    def __init__(self, name: str, coords: str):
        self.name, self.coords = name, coords

    def encode(self, box: Sequence[float], width: float, height: float,
               phrase: str | None = None) -> str:
        """The box (absolute pixels) as text in this format (``phrase``: the expression it
        grounds, written beside the box by formats that tag it; ignored by bare boxes)."""
        if self.coords == "square":
            vals = boxes.to_square_padded_normalized(box, width, height, ndigits=2)
            return "[" + ", ".join(f"{v:.2f}" for v in vals) + "]"
        if self.coords == "normalized":
            vals = boxes.to_normalized(box, width, height, ndigits=3)
            return "[" + ", ".join(f"{v:.3f}" for v in vals) + "]"
        return "[" + ", ".join(str(v) for v in boxes.to_thousand(box, width, height)) + "]"

    def decode(self, text: str, width: float, height: float) -> list[float]:
        """The first box in ``text``, back in absolute pixels."""
        m = _BOX_RE.search(text)
        if not m:
            raise ValueError(f"no [x1, y1, x2, y2] box in {text[:40]!r}")
        vals = [float(v) for v in m.groups()]
        if self.coords == "square":
            return boxes.from_square_padded_normalized(vals, width, height)
        if self.coords == "normalized":
            return boxes.from_normalized(vals, width, height)
        return boxes.from_thousand(vals, width, height)

    def tolerance(self, width: float, height: float) -> float:
        """The largest pixel error the declared precision allows in a round trip."""
        if self.coords == "square":
            return 0.005 * max(width, height) + 1e-6
        if self.coords == "normalized":
            return 0.0005 * max(width, height) + 1e-6
        return 0.0005 * max(width, height) + 1e-6

    def answer(self, value: object) -> str:
        """A box already written as text passes through; a raw box needs :meth:`encode`."""
        if isinstance(value, str):
            return value.strip()
        raise TypeError("box answers need the image size: use encode(box, width, height)")

    def problem(self, text: str) -> str | None:
        m = _BOX_RE.search(text)
        if not m:
            return "no [x1, y1, x2, y2] box"
        vals = [float(v) for v in m.groups()]
        hi = 1000.0 if self.coords == "thousand" else 1.0
        if any(v < 0 or v > hi for v in vals) or vals[2] < vals[0] or vals[3] < vals[1]:
            return f"box {m.group(0)} is outside 0..{hi:g} or inverted"
        return None


_INT = r"\s*(\d+)\s*"


class TaggedBox(BoxFormat):
    """A model family's grounding syntax: the box on integers 0-1000 inside the family's tags,
    the referred phrase (when given) in its reference tags before it.

    ``box`` and ``ref`` are ``str.format`` patterns (``{x1}``... and ``{phrase}``); ``pattern``
    reads the four numbers of a written box back."""

    def __init__(self, name: str, box: str, ref: str, pattern: str):
        super().__init__(name, "thousand")
        self.box, self.ref, self.pattern = box, ref, re.compile(pattern)

    def encode(self, box: Sequence[float], width: float, height: float,
               phrase: str | None = None) -> str:
        x1, y1, x2, y2 = (min(max(v, 0), 1000) for v in boxes.to_thousand(box, width, height))
        text = self.box.format(x1=x1, y1=y1, x2=x2, y2=y2)
        return (self.ref.format(phrase=phrase) if phrase else "") + text

    def decode(self, text: str, width: float, height: float) -> list[float]:
        m = self.pattern.search(text)
        if not m:
            raise ValueError(f"no {self.name} box in {text[:40]!r}")
        return boxes.from_thousand([float(v) for v in m.groups()], width, height)

    def phrase(self, text: str) -> str | None:
        """The referred phrase written before the first box, if any."""
        head, _, tail = self.ref.partition("{phrase}")
        start = text.find(head)
        end = text.find(tail, start + len(head)) if start >= 0 else -1
        return text[start + len(head):end] if start >= 0 and end >= 0 else None

    def problem(self, text: str) -> str | None:
        m = self.pattern.search(text)
        if not m:
            return f"no {self.name} box ({self.box.format(x1='x1', y1='y1', x2='x2', y2='y2')})"
        x1, y1, x2, y2 = (int(v) for v in m.groups())
        if max(x1, y1, x2, y2) > 1000 or x2 < x1 or y2 < y1:
            return f"box {m.group(0)} is outside 0..1000 or inverted"
        return None


def _tagged(open_: str, close: str, inner: str) -> str:
    return re.escape(open_) + inner + re.escape(close)


FAMILY_BOXES = (
    TaggedBox("qwen_vl", "<box>({x1},{y1}),({x2},{y2})</box>", "<ref>{phrase}</ref>",
              _tagged("<box>", "</box>", rf"\({_INT},{_INT}\)\s*,\s*\({_INT},{_INT}\)")),
    TaggedBox("qwen2_vl", "<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>",
              "<|object_ref_start|>{phrase}<|object_ref_end|>",
              _tagged("<|box_start|>", "<|box_end|>",
                      rf"\({_INT},{_INT}\)\s*,\s*\({_INT},{_INT}\)")),
    TaggedBox("internvl", "<box>[[{x1}, {y1}, {x2}, {y2}]]</box>", "<ref>{phrase}</ref>",
              _tagged("<box>", "</box>", rf"\[\[{_INT},{_INT},{_INT},{_INT}\]\]")),
)

FORMATS: dict[str, ResponseFormat] = {
    f.name: f
    for f in (
        ResponseFormat(), ShortAnswer(), MultipleChoice(), OneSentence(), YesNo(),
        BoxFormat("bbox", "square"), BoxFormat("bbox_normalized", "normalized"),
        BoxFormat("bbox_thousand", "thousand"), *FAMILY_BOXES,
    )
}
BOX_FORMATS = tuple(n for n, f in FORMATS.items() if isinstance(f, BoxFormat))


def get(name: str) -> ResponseFormat:
    """The response format called ``name``; an unknown name raises with the closest names."""
    try:
        return FORMATS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(FORMATS), n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise InputError(f"unknown response format {name!r}; formats are {sorted(FORMATS)}",
                         hint=hint) from None


def find_boxes(text: str) -> list[list[float]]:
    """Every ``[a, b, c, d]`` number quadruple written in a text, as floats."""
    return [[float(v) for v in m.groups()] for m in _BOX_RE.finditer(text)]
