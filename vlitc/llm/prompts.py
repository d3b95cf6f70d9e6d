"""Prompt packs: a system prompt and hand-written in-context examples, LLaVA style.

A pack is a folder ``<pack>/system.txt`` + ``<pack>/examples/NNN_context.txt`` and
``NNN_response.txt``, or LLaVA's own prompt folder as its repository ships it
(``playground/data/prompts/<name>/``: ``system_message.txt`` + ``NNN_caps.txt`` (the context)
and ``NNN_conv.txt`` (the response), side by side). Built-in packs live under ``prompt_templates/`` (``llava/conversation``);
a name that is a folder relative to the recipe is a user pack. Per request, ``k`` of the ``N``
examples are drawn with a ``random.Random`` seeded by the recipe seed and the item, and laid out
as alternating user (context) / assistant (response) messages before the item's own context.

A pack may also hold ``user.txt``: the instruction that opens each request's user turn, before
the item's context (vision packs: what to do with the image; its examples describe their image
in words, since an example cannot attach one).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vlitc.errors import InputError, Location
from vlitc.llm.context import TEMPLATES_ROOT

#: default instructions of the ``rewrite`` task (refinement in the manner of MiniGPT-4)
REWRITE_INSTRUCTIONS = (
    "You edit answers written by a visual assistant. Fix grammar and spelling, delete sentences "
    "that repeat an earlier one, finish sentences that stop halfway, and remove characters or "
    "words that do not belong to English prose. Do not add facts and do not change what the "
    "answer says about the image. Keep the layout: if the text is a conversation in "
    "'Question:' / '===' / 'Answer:' blocks, return the same blocks in the same order. Return "
    "only the corrected text, without any explanation; return it unchanged if it needs no fix."
)

_EXAMPLE = re.compile(r"^(\d+)_(context|response)\.txt$")
#: LLaVA's prompt folders: the system prompt and ``NNN_caps.txt`` / ``NNN_conv.txt`` pairs
LLAVA_SYSTEM = "system_message.txt"
_LLAVA_EXAMPLE = re.compile(r"^(\d+)_(caps|conv)\.txt$")
_LLAVA_ROLE = {"caps": "context", "conv": "response"}


def _is_pack(folder: Path) -> bool:
    return (folder / "system.txt").is_file() or (folder / LLAVA_SYSTEM).is_file()


@dataclass(frozen=True)
class PromptPack:
    name: str
    path: Path
    system: str
    examples: tuple[tuple[str, str], ...]  # (context, response)
    user: str = ""  # the instruction before each item's context (user.txt), if any

    def messages(
        self, context: str, k: int | None, rng: random.Random
    ) -> tuple[list[dict], list[int]]:
        """Chat messages for one item, and the indices of the examples drawn."""
        n = len(self.examples)
        chosen = list(range(n)) if k is None or k >= n else rng.sample(range(n), k)
        msgs = [{"role": "system", "content": self.system}]
        for i in chosen:
            ctx, resp = self.examples[i]
            msgs += [{"role": "user", "content": ctx}, {"role": "assistant", "content": resp}]
        msgs.append({"role": "user", "content": context})
        return msgs, chosen


def pack_dir(name: str, recipe_dir: Path | None = None) -> Path:
    """The folder of pack ``name``: a folder relative to the recipe, else a built-in pack."""
    if recipe_dir is not None and _is_pack(recipe_dir / name):
        return (recipe_dir / name).resolve()
    path = TEMPLATES_ROOT / name
    if not _is_pack(path):
        known = sorted(
            str(p.parent.relative_to(TEMPLATES_ROOT)) for p in TEMPLATES_ROOT.rglob("system.txt")
        )
        raise InputError(
            f"prompt pack {name!r} not found (no system.txt or {LLAVA_SYSTEM})",
            Location(str(path)),
            hint=f"built-in packs: {', '.join(known)}; or a folder next to the recipe",
        )
    return path


def pack_files(name: str, recipe_dir: Path | None = None) -> list[Path]:
    """Every file of a pack, sorted (their contents belong in the step key)."""
    root = pack_dir(name, recipe_dir)
    if not (root / "system.txt").is_file():
        return [root / LLAVA_SYSTEM] + sorted(
            p for p in root.glob("*.txt") if _LLAVA_EXAMPLE.match(p.name))
    user = [root / "user.txt"] if (root / "user.txt").is_file() else []
    return [root / "system.txt", *user] + sorted((root / "examples").glob("*.txt"))


def load_pack(name: str, recipe_dir: Path | None = None) -> PromptPack:
    root = pack_dir(name, recipe_dir)
    stamp = tuple(p.stat().st_mtime_ns for p in pack_files(name, recipe_dir))
    return _load(str(root), name, stamp)


def _read(path: Path) -> str:
    """A pack file's text, stripped; a folder, an unreadable file or text that is not UTF-8 is
    a located :class:`InputError`."""
    if not path.is_file():
        raise InputError("a prompt pack file must be a text file, not a folder" if path.is_dir()
                         else "prompt pack file not found", Location(str(path)))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read prompt pack file: {e.strerror or e}", Location(str(path))) from None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"prompt pack file is not UTF-8 text: {e.reason} at byte {e.start}",
                         Location(str(path), line, col), hint="save the file as UTF-8") from None


@lru_cache(maxsize=32)
def _load(root_s: str, name: str, stamp: tuple) -> PromptPack:
    root = Path(root_s)
    pairs: dict[str, dict[str, str]] = {}
    if (root / "system.txt").is_file():
        system = _read(root / "system.txt")
        folder, names = root / "examples", {"context": "context", "response": "response"}
        for p in sorted(folder.glob("*")):
            m = _EXAMPLE.match(p.name)
            if not m:
                raise InputError(
                    f"unexpected file {p.name} in a prompt pack",
                    Location(str(p)),
                    hint="examples are NNN_context.txt / NNN_response.txt pairs",
                )
            pairs.setdefault(m.group(1), {})[m.group(2)] = _read(p)
    else:  # LLaVA's layout: other files in the folder (notes, scripts) are not examples
        system = _read(root / LLAVA_SYSTEM)
        folder, names = root, {"context": "caps", "response": "conv"}
        for p in sorted(root.glob("*.txt")):
            m = _LLAVA_EXAMPLE.match(p.name)
            if m:
                pairs.setdefault(m.group(1), {})[_LLAVA_ROLE[m.group(2)]] = _read(p)
    examples = []
    for num, pair in sorted(pairs.items()):
        if set(pair) != {"context", "response"}:
            missing = ({"context", "response"} - set(pair)).pop()
            raise InputError(
                f"example {num} has no {missing} file",
                Location(str(folder / f"{num}_{names[missing]}.txt")),
            )
        examples.append((pair["context"], pair["response"]))
    user = root / "user.txt"
    instruction = user.read_text(encoding="utf-8").strip() if user.is_file() else ""
    return PromptPack(name, root, system, tuple(examples), instruction)
