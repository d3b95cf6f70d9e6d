"""Shared machinery of annotation-adaption tasks: instruction pools, seeded selection, rendering.

An adaption task turns each image record into items (one question, one caption, one object...),
each with template variables and a response. :class:`AdaptTask` does the rest the same way for
every kind: it reads the instruction pool (``{pool: name}``, inline ``{templates: [...]}`` or the
kind's default pool in ``prompt_templates/pools/``), checks every template reads only variables
the kind provides, picks a template per item with a seeded, order-independent choice (``random``)
or a seeded round robin (``balanced``), renders it, applies the response format, and builds the
sample with its metadata (record id, template, format, annotations).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from vlitc import formats as fmt
from vlitc.errors import InputError
from vlitc.ops.base import OpContext, Task
from vlitc.ops.pools import builtin_pool_path, locate_in_file, locate_pool, read_pool_file
from vlitc.records import Record, Sample, grounding, one_image, sample
from vlitc.templating import Renderer, TemplateProblem, check_variables, located_error

#: Variables every template may read: the record's layers and image size.
BASE_VARS = frozenset({
    "id", "source", "width", "height", "captions", "objects", "qas", "ocr", "regions",
    "categories",
})

INSTRUCTION_SCHEMA = {
    "oneOf": [
        {"type": "object", "properties": {"pool": {"type": "string", "minLength": 1}},
         "required": ["pool"], "additionalProperties": False},
        {"type": "object",
         "properties": {"templates": {"type": "array", "minItems": 1,
                                      "items": {"type": "string", "minLength": 1}}},
         "required": ["templates"], "additionalProperties": False},
    ],
    "description": "where the instructions come from: {pool: NAME} (a pool under 'pools:') or "
                   "{templates: [\"...\", ...]} (written in place)",
}
SELECTION_SCHEMA = {"enum": ["random", "balanced"], "default": "random"}


def task_schema(formats: list[str] | None = None, default: str | None = None, *,
                required: tuple[str, ...] = (), **extra: dict) -> dict:
    """The params schema of an adaption task: source, instruction, selection, format (when the
    kind has ``formats``; ``default`` or the first), then ``extra``; ``source`` and ``required``
    are required."""
    props: dict = {"source": {"type": "string", "minLength": 1}, "instruction": INSTRUCTION_SCHEMA,
                   "selection": SELECTION_SCHEMA}
    if formats:
        props["format"] = {"enum": formats, "default": default or formats[0]}
    return {"type": "object", "properties": {**props, **extra}, "required": ["source", *required],
            "additionalProperties": False}


class Item(NamedTuple):
    """One thing to ask about a record: a stable key, template variables, the response, extra meta."""

    key: str
    vars: dict
    response: str
    meta: dict | None = None


def base_context(rec: Record) -> dict[str, Any]:
    """The record-level template variables."""
    img = one_image(rec)
    objects = rec.get("objects") or []
    return {
        "id": rec["id"], "source": rec.get("source", ""),
        "width": img.get("width"), "height": img.get("height"),
        "captions": rec.get("captions") or [], "objects": objects, "qas": rec.get("qas") or [],
        "ocr": rec.get("ocr") or [], "regions": rec.get("regions") or [],
        "categories": sorted({o["category"] for o in objects if not o.get("iscrowd")}),
    }


def stable_index(key: str, n: int) -> int:
    """A seeded, order-independent choice in ``range(n)`` from a string key."""
    return _index(hashlib.blake2b(key.encode(), digest_size=8), n)


def stable_indexer(prefix: str, n: int) -> Callable[[str], int]:
    """``stable_index(prefix + key, n)`` as a function of ``key``, the prefix hashed once (a
    task picks a template for each of millions of items under one seed)."""
    start = hashlib.blake2b(prefix.encode(), digest_size=8)

    def index(key: str) -> int:
        h = start.copy()
        h.update(key.encode())
        return _index(h, n)

    return index


def _index(h: Any, n: int) -> int:
    return int.from_bytes(h.digest(), "little") % n


def rng_for(ctx: OpContext, label: str, *parts: object) -> random.Random:
    """A random generator seeded by the recipe seed, the task and the given parts."""
    return random.Random(":".join([str(ctx.seed), label, *map(str, parts)]))


class Selector:
    """Picks a template index per item: ``random`` (hash of seed and item) or ``balanced``."""

    def __init__(self, mode: str, n: int, seed_key: str):
        self.mode, self.n, self.seed_key = mode, n, seed_key
        self._block: list[int] = []
        self._i = 0
        self._random = stable_indexer(f"{seed_key}:", n)  # stable_index(f"{seed_key}:{item_key}", n)

    def pick(self, item_key: str) -> int:
        if self.n == 1:
            return 0
        if self.mode == "random":
            return self._random(item_key)
        if not self._block:
            self._block = list(range(self.n))
            random.Random(f"{self.seed_key}:balanced:{self._i}").shuffle(self._block)
            self._i += 1
        return self._block.pop()


class Instructions(NamedTuple):
    """A task's resolved instruction pool."""

    pool: str | None  # recipe pool name, "default:<name>", or None for inline templates
    renderers: list[Renderer]
    meta: list[dict]  # ``meta["template"]`` per template: pool, index, text (shared, read-only)


class AdaptTask(Task):
    """Base of annotation-adaption task kinds; subclasses implement :meth:`items`."""

    #: default pool file name in ``prompt_templates/pools/`` (None: ``instruction`` is required)
    default_pool: ClassVar[str | None] = None
    #: the response format of kinds that have no ``format`` param
    fixed_format: ClassVar[str] = "free"
    #: template variables the kind provides beyond :data:`BASE_VARS`
    provides: ClassVar[frozenset[str]] = frozenset()
    #: variables an instruction must read, as alternatives (at least one of each set)
    required: ClassVar[tuple[frozenset[str], ...]] = ()
    reads: ClassVar[tuple[str, ...]] = ("image",)
    writes = ("turns", "meta.record_id", "meta.template", "meta.format", "meta.annotations")

    # -- params ---------------------------------------------------------------------------

    def references(self) -> dict[str, list[str]]:
        refs = super().references()
        instr = self.params.get("instruction") or {}
        if "pool" in instr:
            refs["pool"] = [instr["pool"]]
        return refs

    def files(self, ctx: OpContext) -> list[Path]:
        out = super().files(ctx)
        if not self.params.get("instruction") and self.default_pool:
            out.append(builtin_pool_path(self.default_pool))
        return out

    @property
    def format(self) -> fmt.ResponseFormat:
        return fmt.get(self.params.get("format") or self.fixed_format)

    def variables(self) -> frozenset[str]:
        """Variables this task's templates may read."""
        return BASE_VARS | self.provides

    @classmethod
    def template_variables(cls) -> dict[str, frozenset[str]]:
        return {"instruction": BASE_VARS | cls.provides}

    # -- instructions ---------------------------------------------------------------------

    def instructions(self, ctx: OpContext) -> Instructions:
        """Read and check the instruction pool (located errors for undefined variables)."""
        instr = self.params.get("instruction")
        where = f"task {self.label!r} instruction"
        if instr and "pool" in instr:
            name = instr["pool"]
            texts = [r["template"] for r in ctx.input(f"pool:{name}")]
            pool, locate = name, locate_pool(ctx, name)
        elif instr:
            texts, pool, locate = list(instr["templates"]), None, locate_pool(ctx, "")
        elif self.default_pool:
            path = builtin_pool_path(self.default_pool)
            texts = [t for t, _ in read_pool_file(path)]
            pool, locate = f"default:{self.default_pool}", locate_in_file(path)
        else:
            raise InputError(f"task {self.label!r}: no instruction pool",
                             hint="add instruction: {pool: <name>} or {templates: [...]}")
        if not texts:
            raise InputError(f"task {self.label!r}: instruction pool {pool!r} is empty")
        self._locate = locate
        renderers = check_variables(texts, self.variables(), where, locate)
        meta = [{"pool": pool, "index": i, "text": r.text} for i, r in enumerate(renderers)]
        return Instructions(pool, renderers, meta)

    # -- run ------------------------------------------------------------------------------

    def items(self, rec: Record, base: dict, ctx: OpContext) -> Iterator[Item]:
        raise NotImplementedError

    def setup(self, ctx: OpContext) -> None:
        """Hook run once before the records stream (e.g. to read a vocabulary)."""

    def check(self, ctx: OpContext) -> None:
        """Before building: every instruction template reads only variables this task provides."""
        self.instructions(ctx)

    def shardable(self) -> bool:
        # a balanced round robin carries its position from one record to the next
        return self.params["selection"] != "balanced"

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        instr = self.instructions(ctx)
        self.setup(ctx)
        selector = Selector(self.params["selection"], len(instr.renderers),
                            f"{ctx.seed}:{self.label}")
        form = self.format
        n_in = n_out = 0
        for rec in records:
            n_in += 1
            base = base_context(rec)
            ann = grounding(rec)
            for item in self.items(rec, base, ctx):
                s = self._sample(rec, item, base, ann, instr, selector, form, ctx)
                if s is not None:
                    n_out += 1
                    yield s
            if n_in % 10000 == 0:
                ctx.emit({"event": "progress", "step": ctx.step_id, "done": n_in})
        ctx.count("records", n_in)
        ctx.count("samples", n_out)

    def _sample(self, rec, item: Item, base, ann, instr: Instructions, selector: Selector,
                form: fmt.ResponseFormat, ctx: OpContext) -> Sample | None:
        key = f"{rec['id']}/{item.key}"
        idx = selector.pick(key)
        r = instr.renderers[idx]
        text = r.constant
        if text is None:
            ctxvars = {**base, **item.vars} if item.vars else base
            if not r.variables <= ctxvars.keys():
                ctx.count("skipped_missing_" + sorted(r.variables - ctxvars.keys())[0])
                return None
            try:
                text = r.render(ctxvars)
            except TemplateProblem as e:
                raise located_error(e, f"task {self.label!r} instruction", self._locate) from None
        if not text.strip() or not item.response.strip():
            ctx.count("skipped_empty")
            return None
        meta = {"record_id": rec["id"], "template": instr.meta[idx], "format": form.name,
                "annotations": ann}
        if item.meta:
            meta.update(item.meta)
        turns = [{"role": "user", "content": self.instruct(text, item, form)},
                 {"role": "assistant", "content": item.response}]
        return sample(f"{self.label}/{key}", self.label, turns,
                      source=rec.get("source", ""), image=rec.get("image"), meta=meta, own=True)

    def instruct(self, text: str, item: Item, form: fmt.ResponseFormat) -> str:
        """The user turn: the rendered instruction plus the format prompt."""
        return form.instruct(text)


def fitting_response(form: fmt.ResponseFormat, value: object, ctx: OpContext) -> str | None:
    """``value`` written in the format, or ``None`` (counted) when it cannot fit the format."""
    try:
        text = form.answer(value)
    except (ValueError, TypeError):
        ctx.count("skipped_format")
        return None
    if form.problem(text) is not None:
        ctx.count("skipped_format")
        return None
    return text
