"""Export validation: every sample a trainer will see is structurally sound and loadable.

Checks, per sample: one image placeholder per image (at the start of the first user turn), roles
alternate user/assistant, no empty turn, the image file exists, and (optionally) the estimated
length fits a trainer's context budget. Failures raise :class:`ExportValidationError` listing the
offending ids, before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location, UserError
from vlitc.ops.base import OpContext
from vlitc.paths import folder_entries
from vlitc.records import IMAGE_TOKEN, Sample, images_of, is_sound, structure_problems
from vlitc.run.heap import step_cache

#: how many offending ids an error message lists before "and N more"
SHOW = 20


class ExportValidationError(UserError):
    """Samples that would break a trainer; ``problems`` maps sample id -> what is wrong."""

    def __init__(self, what: str, problems: dict[str, list[str]]):
        self.problems = problems
        lines = [f"{what}: {len(problems)} sample(s) fail export validation"]
        for sid in list(problems)[:SHOW]:
            lines.append(f"  {sid}: {'; '.join(problems[sid])}")
        if len(problems) > SHOW:
            lines.append(f"  ... and {len(problems) - SHOW} more")
        lines.append("hint: fix the task or add a filter (e.g. max_tokens) that drops these samples")
        super().__init__("\n".join(lines))


def estimate_tokens(s: Sample, tokens_per_word: float, image_tokens: int = 0) -> int:
    """A trainer-agnostic length estimate: words times a declared tokens-per-word ratio, plus the
    tokens an image costs (e.g. 576 for a 336px CLIP ViT-L/14 encoder)."""
    words = sum(len(t["content"].replace(IMAGE_TOKEN, " ").split()) for t in s.get("turns", []))
    return int(round(words * tokens_per_word)) + image_tokens * len(images_of(s))


class TokenCounter:
    """A sample's length measured with a trainer's own tokenizer, loaded offline from a local
    path: a ``tokenizer.json`` (or a folder holding one) with ``tokenizers``, else a folder that
    ``transformers.AutoTokenizer`` reads (``local_files_only``). Counts the tokens of every
    turn's text (placeholders removed, no special tokens) plus ``image_tokens`` per image."""

    def __init__(self, path: Path, image_tokens: int = 0):
        self.path, self.image_tokens = path, image_tokens
        self.encode = _load_tokenizer(str(path))

    def __call__(self, s: Sample) -> int:
        texts = [t["content"].replace(IMAGE_TOKEN, "") for t in s.get("turns", [])]
        return sum(self.encode(texts)) + self.image_tokens * len(images_of(s))


def tokenizer_files(path: Path) -> list[Path]:
    """The files of a tokenizer path whose contents decide the counts (for the step key)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                  and (p.name.startswith(("tokenizer", "vocab", "merges", "special_tokens",
                                          "added_tokens")) or p.suffix == ".model"))


@lru_cache(maxsize=4)
def _load_tokenizer(path_s: str) -> Callable[[list[str]], list[int]]:
    """``texts -> token counts`` for the tokenizer at ``path_s`` (loaded once per process)."""
    path = Path(path_s)
    file = path if path.is_file() else path / "tokenizer.json"
    if not path.exists():
        raise InputError(f"tokenizer not found: {path}", Location(str(path)),
                         hint="name a local tokenizer.json or a folder holding the trainer's "
                              "tokenizer files; nothing is downloaded")
    if file.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:  # the library's own parse errors: a bad file, not a bug here
            raise InputError(f"cannot read tokenizer: {e}", Location(str(file))) from None
        return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    from transformers import AutoTokenizer

    try:
        auto = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load tokenizer: {e}", Location(str(path))) from None
    return lambda texts: [len(ids) for ids in auto(texts, add_special_tokens=False)["input_ids"]]


def image_problem(image: dict, ctx: OpContext) -> str | None:
    """Why an image reference cannot be found, or ``None`` when its file exists."""
    if image.get("root") not in ctx.image_roots:
        return f"image root {image.get('root')!r} is not a known source"
    path = ctx.image_path(image)
    return None if path.is_file() else f"image file not found: {path}"


#: image folders' listings, by folder and the folder's mtime (a file added, removed or renamed
#: since changes it): a process lists a folder once for the chunks of one export step (the
#: listings go when it begins another, :func:`vlitc.run.heap.end_step`)
_LISTINGS: dict[tuple[str, int], dict[str, bool]] = step_cache()


def folder_files(folder: str) -> dict[str, bool]:
    """The names in ``folder``, each with whether it is a file (links followed, as
    ``os.path.isfile``): one listing for the many images of an export, instead of a ``stat``
    each (empty when the folder cannot be listed)."""
    try:
        key = (folder, os.stat(folder).st_mtime_ns)
    except OSError:
        return {}
    hit = _LISTINGS.get(key)
    if hit is None:
        hit = folder_entries(folder, os.DirEntry.is_file)
        if len(_LISTINGS) >= 4:
            _LISTINGS.clear()
        _LISTINGS[key] = hit
    return hit


class ImageFiles:
    """:func:`image_problem` answered once per ``(root, path)``: an export names each image once
    per sample, and a dataset has several samples per image. A file directly in its root is
    found in the root's listing (:func:`folder_files`), any other with plain ``os.path``
    strings, as ``ctx.image_path`` joins them; a miss is explained by :func:`image_problem`
    itself, so the messages are the same."""

    def __init__(self, ctx: OpContext):
        self.ctx = ctx
        self.roots = {name: os.fspath(folder) for name, folder in ctx.image_roots.items()}
        self.seen: dict[tuple, str | None] = {}
        self._listed: dict[str, dict[str, bool]] = {}

    def _listing(self, folder: str) -> dict[str, bool]:
        hit = self._listed.get(folder)
        if hit is None:
            hit = self._listed[folder] = folder_files(folder)
        return hit

    def problem(self, image: dict) -> str | None:
        key: tuple[Any, Any] = (image.get("root"), image.get("path"))  # unchecked JSON values
        try:
            return self.seen[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable path: no fast answer
            return image_problem(image, self.ctx)
        folder = self.roots.get(key[0])
        rel = key[1]
        try:
            found = folder is not None and (
                (type(rel) is str and "/" not in rel and self._listing(folder).get(rel) is True)
                or os.path.isfile(os.path.join(folder, rel)))
        except TypeError:  # not a path at all: image_problem says how it fails
            found = False
        why = None if found else image_problem(image, self.ctx)
        self.seen[key] = why
        return why


def sample_problems(
    s: Sample, ctx: OpContext, *, max_tokens: int | None = None,
    tokens_per_word: float = 1.3, image_tokens: int = 0, images: ImageFiles | None = None,
    tokenizer: TokenCounter | None = None,
) -> list[str]:
    """Everything wrong with one sample for export (empty when it is sound); with a
    ``tokenizer``, the budget is checked on measured tokens instead of the word estimate."""
    out = structure_problems(s)
    for image in images_of(s):
        why = images.problem(image) if images is not None else image_problem(image, ctx)
        if why:
            out.append(why)
    if max_tokens is not None and tokenizer is not None:
        n = tokenizer(s)
        if n > max_tokens:
            out.append(f"{n} tokens ({tokenizer.path.name} tokenizer), over the budget of "
                       f"{max_tokens}")
    elif max_tokens is not None:
        n = estimate_tokens(s, tokens_per_word, image_tokens)
        if n > max_tokens:
            out.append(f"about {n} tokens, over the budget of {max_tokens}")
    return out


class SampleChecker:
    """:func:`sample_problems` over a stream of samples, gathering the problems by sample id.

    Sound samples pass on a fast path (:func:`is_sound`, each image file checked once); only a
    sample that fails it is examined again in full, for the messages."""

    def __init__(self, ctx: OpContext, what: str = "export", *, max_tokens: int | None = None,
                 tokens_per_word: float = 1.3, image_tokens: int = 0,
                 tokenizer: TokenCounter | None = None):
        self.ctx, self.what, self.images = ctx, what, ImageFiles(ctx)
        self.max_tokens, self.tokens_per_word, self.image_tokens = (
            max_tokens, tokens_per_word, image_tokens)
        self.tokenizer = tokenizer
        self.problems: dict[str, list[str]] = {}

    def length(self, s: Sample) -> int:
        """The sample's tokens: measured with the tokenizer, else the word estimate."""
        if self.tokenizer is not None:
            return self.tokenizer(s)
        return estimate_tokens(s, self.tokens_per_word, self.image_tokens)

    def check(self, s: Sample) -> bool:
        """True when ``s`` is sound; otherwise its problems are kept for :meth:`raise_problems`."""
        image = s.get("image")
        if (is_sound(s) and (not image or self.images.problem(image) is None)
                and (self.max_tokens is None or self.length(s) <= self.max_tokens)):
            return True
        p = sample_problems(s, self.ctx, max_tokens=self.max_tokens, images=self.images,
                            tokens_per_word=self.tokens_per_word, image_tokens=self.image_tokens,
                            tokenizer=self.tokenizer)
        if p:
            self.problems[str(s.get("id"))] = p
        return not p

    def raise_problems(self) -> None:
        """Raise :class:`ExportValidationError` if any checked sample had problems."""
        if self.problems:
            raise ExportValidationError(self.what, self.problems)


def llava_record_problems(rec: dict, image_folder: Path | None = None) -> list[str]:
    """What is wrong with one record of a LLaVA JSON file, read as LLaVA's trainer reads it."""
    out: list[str] = []
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        return ["no conversations"]
    for i, turn in enumerate(convs):
        want = ("human", "gpt")[i % 2]
        if turn.get("from") != want:
            out.append(f"turn {i} is from {turn.get('from')!r}, expected {want!r}")
            break
    if len(convs) % 2:
        out.append("conversation ends on a human turn")
    n_ph = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in convs)
    if "image" in rec:
        files = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
        if n_ph != len(files):
            out.append(f"{n_ph} image placeholders for {len(files)} image(s)")
        elif len(files) == 1 and not str(convs[0].get("value", "")).startswith(IMAGE_TOKEN):
            out.append("image placeholder is not at the start of the first human turn")
        for name in files if image_folder is not None else []:
            if not (image_folder / name).is_file():
                out.append(f"image file not found: {image_folder / name}")
    elif n_ph:
        out.append("text-only record has an image placeholder")
    return out


def validate_llava_file(path: str | Path, image_folder: str | Path | None = None) -> int:
    """Validate a LLaVA JSON file (and its images under ``image_folder``); return its length."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ExportValidationError(str(path), {"<file>": ["top level is not a JSON array"]})
    folder = Path(image_folder) if image_folder is not None else None
    problems = {}
    for i, rec in enumerate(data):
        p = llava_record_problems(rec, folder)
        if p:
            problems[str(rec.get("id", f"#{i}"))] = p
    if problems:
        raise ExportValidationError(str(path), problems)
    return len(data)
