"""Turn a generator's raw text into conversation turns, or say why it cannot.

Formats:

* ``llava_qa``    LLaVA's ``Question:`` / ``===`` / ``Answer:`` blocks (conversation, complex)
* ``json_dialog`` the review paper's ``{"User": ..., "AI": ...}`` dialog: one object with
  repeated keys, a list of such objects, or several objects in a row
* ``answer``      the whole text is the answer to an instruction chosen by the task (detail)

A failure returns ``Parsed(turns=None, error=reason)``; callers keep the raw text. A reply that
copies a format example instead of writing a conversation (a turn that is only a placeholder such
as ``Question?``, ``Answer.`` or ``<answer>``) is a failure too.

Structured output: :func:`response_format` gives the JSON schema a ``json_dialog`` request asks
for, ``{"dialog": [{"User": ..., "AI": ...}, ...]}`` (a JSON schema cannot say "repeated keys"),
in the OpenAI ``response_format`` form each provider translates (see the generators'
``response_format``); the parser reads that form besides the repeated-key object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FORMATS = ("llava_qa", "json_dialog", "answer")

#: the format of each parser in words: what a repair request asks for. Never an example to copy
#: (small models answer a repair with the example itself).
HINTS = {
    "llava_qa": "blocks that each start with a line 'Question:' or 'Answer:' followed by your own "
    "question or answer about this image, with a line of three equals signs between blocks; "
    "questions and answers alternate, starting with a question",
    "json_dialog": 'one JSON object whose keys alternate "User" and "AI", starting with "User"; '
    "each value is the full text of that turn: your own questions about this image and the "
    "assistant's answers to them",
    "answer": "plain text",
}

#: what a copied format example leaves in a turn
PLACEHOLDERS = frozenset({
    "question", "question?", "question.", "answer", "answer.", "answer?", "<question>",
    "<answer>", "...", "…", "user", "ai", "text", "<text>", "your question", "your answer",
})

#: the JSON schema of a dialog (OpenAI strict mode: closed objects, every key required)
DIALOG_SCHEMA = {
    "type": "object",
    "properties": {
        "dialog": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"User": {"type": "string"}, "AI": {"type": "string"}},
                "required": ["User", "AI"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["dialog"],
    "additionalProperties": False,
}


def response_format(fmt: str) -> dict | None:
    """The structured output a request in format ``fmt`` asks for (``None``: free text)."""
    if fmt != "json_dialog":
        return None
    return {"type": "json_schema",
            "json_schema": {"name": "dialog", "schema": DIALOG_SCHEMA, "strict": True}}

_LABEL = re.compile(
    r"^[ \t]*(?:\*\*)?(Question|Answer|Q|A)(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)
_SEP = re.compile(r"^[ \t]*={3,}[ \t]*$", re.MULTILINE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_USER = {"user", "human", "question", "q"}
_AI = {"ai", "assistant", "gpt", "answer", "a"}


@dataclass
class Parsed:
    turns: list[dict] | None
    error: str | None = None


def _fail(reason: str) -> Parsed:
    return Parsed(None, reason)


def _turns(pairs: list[tuple[str, str]]) -> Parsed:
    """Alternating user/assistant turns from (role, text) pairs, checked."""
    turns = []
    for i, (role, text) in enumerate(pairs):
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            return _fail(f"turn {i + 1} is from the {role}, expected the {want}")
        if not text.strip():
            return _fail(f"turn {i + 1} is empty")
        if text.strip().strip('"').strip().lower() in PLACEHOLDERS:
            return _fail(f"turn {i + 1} is the placeholder {text.strip()!r}: the reply repeats "
                         "the format example instead of writing a conversation")
        turns.append({"role": role, "content": text.strip()})
    if len(turns) % 2:
        turns = turns[:-1]  # a trailing question without an answer is dropped
    if not turns:
        return _fail("no complete question and answer")
    return Parsed(turns)


def _role(label: str) -> str:
    return "user" if label.lower() in ("question", "q") else "assistant"


def parse_llava_qa(text: str) -> Parsed:
    """Turns from ``Question:`` / ``Answer:`` blocks.

    A label starts a new turn only when it is the other role than the turn before, written in
    the same style as the first label (``Question:`` or ``Q:``) and, when the text separates its
    blocks with ``===``, at the start of a block: so an answer that has a line starting with
    ``q:``, ``a:`` or even ``Question:`` keeps that line instead of being cut there."""
    labels = list(_LABEL.finditer(text))
    if not labels:
        return _fail("no 'Question:' / 'Answer:' blocks")
    first = labels[0]
    before = _SEP.sub("", text[: first.start()]).strip()
    if before:
        return _fail(f"text before the first question: {before[:60]!r}")
    short = len(first.group(1)) == 1
    block_starts = [m.end() for m in _SEP.finditer(text)]
    bounds = [first]
    for m in labels[1:]:
        prev = _role(bounds[-1].group(1))
        if _role(m.group(1)) == prev or (len(m.group(1)) == 1) != short:
            continue
        if prev == "assistant" and block_starts and not _at_block_start(text, m.start(), block_starts):
            continue
        bounds.append(m)
    pairs = []
    for i, m in enumerate(bounds):
        end = bounds[i + 1].start() if i + 1 < len(bounds) else len(text)
        pairs.append((_role(m.group(1)), _SEP.sub("", text[m.end():end])))
    return _turns(pairs)


def _at_block_start(text: str, pos: int, block_starts: list[int]) -> bool:
    """Whether only blank space lies between the last ``===`` line before ``pos`` and ``pos``."""
    last = max((b for b in block_starts if b <= pos), default=None)
    return last is not None and not text[last:pos].strip()


def _objects(text: str) -> list:
    """Every JSON value in ``text`` (after code fences are unwrapped), keeping duplicate keys."""
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    dec = json.JSONDecoder(object_pairs_hook=lambda kv: kv)
    out: list = []
    i = 0
    while True:
        starts = [j for j in (text.find("{", i), text.find("[", i)) if j >= 0]
        if not starts:
            return out
        try:
            val, i = dec.raw_decode(text, min(starts))
        except json.JSONDecodeError:
            if not out:
                raise
            return out
        out.append(val)


def _wrapped(value) -> bool:
    """Whether ``value`` (as :func:`_objects` decodes it) is ``{"dialog": [objects]}``."""
    return (isinstance(value, list) and len(value) == 1 and isinstance(value[0], tuple)
            and value[0][0] == "dialog" and isinstance(value[0][1], list)
            and all(isinstance(o, list) for o in value[0][1]))


def parse_json_dialog(text: str) -> Parsed:
    try:
        values = _objects(text)
    except json.JSONDecodeError as exc:
        return _fail(f"invalid JSON: {exc.msg} at character {exc.pos}")
    if not values:
        return _fail("no JSON dialog found")
    items = []
    for v in values:
        if _wrapped(v):  # the structured-output form {"dialog": [...]}
            v = v[0][1]
        items += v if isinstance(v, list) and v and isinstance(v[0], list) else [v]
    pairs: list[tuple[str, str]] = []
    for obj in items:
        if not isinstance(obj, list) or not all(isinstance(kv, tuple) for kv in obj):
            return _fail('the dialog is not made of {"User": ..., "AI": ...} objects')
        for key, val in obj:
            k = key.strip().lower()
            role = "user" if k in _USER else "assistant" if k in _AI else None
            if role is None or not isinstance(val, str):
                return _fail(f"unexpected key or value in the dialog: {key!r}")
            pairs.append((role, val))
    return _turns(pairs)


def parse_answer(text: str, instruction: str | None) -> Parsed:
    if not instruction:
        return _fail("no instruction to pair the answer with")
    if not text.strip():
        return _fail("empty answer")
    return Parsed(
        [{"role": "user", "content": instruction}, {"role": "assistant", "content": text.strip()}]
    )


def parse(text: str, fmt: str, instruction: str | None = None) -> Parsed:
    """Parse ``text`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "llava_qa":
        return parse_llava_qa(text)
    if fmt == "json_dialog":
        return parse_json_dialog(text)
    if fmt == "answer":
        return parse_answer(text, instruction)
    raise ValueError(f"unknown response format {fmt!r}; formats are {FORMATS}")


def repair_message(fmt: str, reason: str) -> str:
    """The follow-up user message of a repair request: the reason and the format in words,
    with no example that could be sent back as the answer."""
    return (
        f"Your reply could not be read: {reason}. Write the conversation about this image "
        f"again, with nothing else around it, as {HINTS[fmt]}."
    )
