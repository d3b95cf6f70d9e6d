"""Instruction pools: lists of Jinja2 templates, from a file, inline, or expanded by an LLM.

``list``   a hand-written pool: ``file`` (one template per line, ``#`` comments and blank lines
           ignored, ``\\n`` for a line break; or a YAML/JSON list) or inline ``templates``.
``expand`` an LLM writes paraphrases of seed instructions; the result is deduplicated (exact,
           then by sentence-embedding similarity) and stored as the step's output, so a release
           can review and freeze it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vlitc.errors import GenerationError, InputError, Location
from vlitc.ops.base import OpContext, Pool
from vlitc.ops.model import ModelOp
from vlitc.ops.registry import register
from vlitc.recipe.load import compose

#: Where the default pools shipped with vlitc live (package data first, then a source checkout).
_BUILTIN_DIRS = (
    Path(__file__).resolve().parents[1] / "data" / "prompt_templates" / "pools",
    Path(__file__).resolve().parents[2] / "prompt_templates" / "pools",
)


def builtin_pool_path(name: str) -> Path:
    """The file of a default pool shipped with vlitc (``prompt_templates/pools/<name>.txt``)."""
    for d in _BUILTIN_DIRS:
        p = d / f"{name}.txt"
        if p.is_file():
            return p
    raise InputError(
        f"no default pool named {name!r}",
        hint=f"default pools live in {_BUILTIN_DIRS[-1]}",
    )


def read_pool_file(path: Path) -> list[tuple[str, int]]:
    """``(template, line)`` pairs from a pool file: ``.txt`` one per line, or a YAML/JSON list."""
    if not path.is_file():
        raise InputError("pool file not found", Location(str(path)),
                         hint="paths are relative to the recipe's folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read pool file: {e}", Location(str(path))) from None
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return _read_list_file(path, text)
    out: list[tuple[str, int]] = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((s.replace("\\n", "\n"), i))
    return out


def _read_list_file(path: Path, text: str) -> list[tuple[str, int]]:
    try:
        node = compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = Location(str(path), mark.line + 1, mark.column + 1) if mark else Location(str(path))
        raise InputError(f"pool file is not valid YAML/JSON: {getattr(e, 'problem', e)}", loc) from None
    if not isinstance(node, yaml.SequenceNode):
        line = node.start_mark.line + 1 if node is not None else 0
        raise InputError("pool file must hold a list of templates", Location(str(path), line, 1),
                         hint="write a YAML list (- one template per item) or a JSON array")
    out: list[tuple[str, int]] = []
    for item in node.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.ScalarNode) or item.tag != "tag:yaml.org,2002:str":
            raise InputError("every pool item must be a string template",
                             Location(str(path), line, item.start_mark.column + 1))
        out.append((item.value, line))
    return out


def locate_in_file(path: Path):
    """A function mapping a template text to its :class:`Location` in a pool file (or ``None``)."""
    try:
        lines = {t: ln for t, ln in reversed(read_pool_file(path))}
    except InputError:
        lines = {}

    def locate(text: str) -> Location | None:
        ln = lines.get(text)
        return Location(str(path), ln, 1) if ln else None

    return locate


def locate_pool(ctx: OpContext, pool: str):
    """Locate templates of the recipe's pool ``pool``: its file line, or the recipe itself."""
    cfg = (ctx.recipe.get("pools") or {}).get(pool) or {}
    if isinstance(cfg.get("file"), str):
        return locate_in_file(ctx.resolve(cfg["file"]))
    return ctx.locate_value


_NONEMPTY_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}


@register("pool", "list")
class ListPool(Pool):
    """A hand-written instruction pool: templates from a file or listed inline."""

    version = 1
    params_schema = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "minLength": 1},
            "templates": _NONEMPTY_LIST,
        },
        "oneOf": [{"required": ["file"]}, {"required": ["templates"]}],
        "additionalProperties": False,
    }
    file_params = ("file",)
    writes = ("template",)

    def check(self, ctx: OpContext) -> None:
        """Every template compiles in the sandbox, used by a task or not (a task checks the
        variables of the templates it uses)."""
        from vlitc.templating import TemplateProblem, compile

        items: list[tuple[str, int]]
        if "templates" in self.params:
            items = [(t, 0) for t in self.params["templates"]]
            path = None
        else:
            path = ctx.resolve(self.params["file"])
            items = [(t, line) for t, line in read_pool_file(path)]
        for text, line in items:
            try:
                compile(text)
            except TemplateProblem as e:
                where = (Location(str(path), line + (e.line or 1) - 1, 1) if path is not None and line
                         else ctx.locate_value(text))
                raise InputError(f"pool {self.label!r}: template {text!r}: {e.message}", where) from None

    def templates(self, ctx: OpContext) -> list[str]:
        if "templates" in self.params:
            out = [t for t in self.params["templates"] if t.strip()]
        else:
            path = ctx.resolve(self.params["file"])
            out = [t for t, _ in read_pool_file(path)]
            if not out:
                raise InputError("pool file holds no templates", Location(str(path)),
                                 hint="one template per line; lines starting with # are comments")
        if not out:
            raise InputError(f"pool {self.label!r} is empty")
        ctx.count("templates", len(out))
        return out


_SYSTEM = (
    "You write instructions for a vision-language dataset. Each instruction asks an assistant "
    "about an image. Keep every {{ variable }} placeholder exactly as written."
)
_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.):]|[A-Za-z][.)])\s+")


def _norm(text: str) -> str:
    """Normal form for exact deduplication: case, spaces and final punctuation ignored."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".?!").casefold()


def parse_lines(text: str) -> list[str]:
    """Instructions from a model's reply: one per line, numbering, bullets and quotes removed."""
    out: list[str] = []
    for line in text.splitlines():
        s = _NUMBERING.sub("", line).strip().strip("\"'\u201c\u201d").strip()
        if len(s.split()) >= 2 and not s.endswith(":"):
            out.append(s)
    return out


def dedup_exact(texts: list[str]) -> list[str]:
    """Drop exact duplicates (up to case, spacing and final punctuation), keeping first seen."""
    seen: set[str] = set()
    out: list[str] = []
    for t in texts:
        k = _norm(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def dedup_similar(texts: list[str], threshold: float, keep_first: int = 0) -> list[str]:
    """Drop texts whose embedding cosine similarity to an earlier kept text is >= ``threshold``.

    Uses all-MiniLM-L6-v2 through :mod:`vlitc.quality.embeddings` when that module is installed;
    without it only exact deduplication applies. The first ``keep_first`` texts are always kept.
    """
    try:
        from vlitc.quality import embeddings
    except ImportError:
        return texts
    import numpy as np

    vecs = np.asarray(embeddings.embed(texts), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True).clip(min=1e-12)
    kept: list[int] = []
    for i in range(len(texts)):
        if i < keep_first or not kept or float((vecs[kept] @ vecs[i]).max()) < threshold:
            kept.append(i)
    return [texts[i] for i in kept]


@register("pool", "expand")
class ExpandPool(ModelOp, Pool):
    """Expand seed instructions into a larger pool with an LLM, deduplicated and cached."""

    version = 1
    params_schema = {
        "type": "object",
        "properties": {
            "seeds": {"oneOf": [
                _NONEMPTY_LIST,
                {"type": "object", "properties": {"pool": {"type": "string"}},
                 "required": ["pool"], "additionalProperties": False},
            ]},
            "generator": {"type": "string", "minLength": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 1000},
            "per_request": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
            "similarity": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.9},
            "include_seeds": {"type": "boolean", "default": True},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
        },
        "required": ["seeds", "generator", "n"],
        "additionalProperties": False,
    }
    reads = ("template",)
    writes = ("template",)
    expands_with_model = True

    def references(self) -> dict[str, list[str]]:
        refs: dict[str, list[str]] = {"generator": [self.params["generator"]]}
        seeds = self.params["seeds"]
        if isinstance(seeds, dict):
            refs["pool"] = [seeds["pool"]]
        return refs

    def seed_templates(self, ctx: OpContext) -> list[str]:
        seeds = self.params["seeds"]
        if isinstance(seeds, dict):
            out = [r["template"] for r in ctx.input(f"pool:{seeds['pool']}")]
        else:
            out = list(seeds)
        if not out:
            raise InputError(f"pool {self.label!r}: no seed instructions")
        return out

    def requests(self, seeds: list[str]) -> list:
        """The generation requests: enough rounds of ``per_request`` paraphrases to reach ``n``."""
        from vlitc.llm import Request

        per = int(self.params["per_request"])
        rounds = -(-int(self.params["n"]) * 2 // per)  # ask for twice n: dedup drops some
        listing = "\n".join(f"- {s}" for s in seeds)
        out = []
        for i in range(rounds):
            user = (f"Here are example instructions:\n{listing}\n\nWrite {per} new instructions "
                    "with the same intent and the same placeholders, varied in wording and "
                    "sentence structure. One per line, no numbering, nothing else.")
            out.append(Request(
                messages=[{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
                temperature=float(self.params["temperature"]), seed=i,
            ))
        return out

    def templates(self, ctx: OpContext) -> list[str]:
        seeds = self.seed_templates(ctx)
        generated: list[str] = []
        errors = []
        for _, resp in self.answers(ctx, enumerate(self.requests(seeds)), lambda ir: ir[1],
                                    lambda ir: f"request {ir[0]}", count_usage=True):
            if resp.error:
                errors.append(resp.error)
                ctx.warn(f"pool {self.label!r}: a request failed: {resp.error}")
                continue
            for text in resp.texts:
                generated += parse_lines(text)
        if errors and len(errors) == len(self.requests(seeds)):
            raise GenerationError(f"pool {self.label!r}: every generation request failed "
                                  f"(the first: {errors[0]})")
        return self._select(seeds, generated, ctx)

    def _select(self, seeds: list[str], generated: list[str], ctx: OpContext) -> list[str]:
        from vlitc.templating import variables

        allowed = set().union(*(variables(s) for s in seeds))
        good = [g for g in generated if _safe_vars(g, allowed)]
        ctx.count("bad_placeholders", len(generated) - len(good))
        seeds = dedup_exact(seeds)
        n_seeds = len(seeds)
        unique = dedup_exact(seeds + good)
        ctx.count("exact_duplicates", n_seeds + len(good) - len(unique))
        similar = dedup_similar(unique, float(self.params["similarity"]), n_seeds)
        ctx.count("near_duplicates", len(unique) - len(similar))
        new = similar[n_seeds:][: int(self.params["n"])]
        ctx.count("generated", len(new))
        if len(new) < int(self.params["n"]):
            ctx.warn(f"pool {self.label!r}: {len(new)} distinct instructions of {self.params['n']}")
        return (similar[:n_seeds] if self.params["include_seeds"] else []) + new


def _safe_vars(text: str, allowed: set[str]) -> bool:
    """Whether a generated template compiles and reads only the seeds' variables."""
    from vlitc.templating import TemplateProblem, variables

    try:
        return variables(text) <= allowed
    except TemplateProblem:
        return False
