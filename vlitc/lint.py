"""Lint instruction pools and prompt files: the defects that slip into hand-written template lists.

Checks, each reported as ``file:line: message``:

* empty templates (an empty string item, or a template with nothing but comments);
* exact duplicates (up to case, spacing and final punctuation) and near duplicates;
* two sentences run together without a space ("Describe the image.Summarize the picture"): what a
  missing comma in a Python or YAML list does to two neighbouring templates;
* Jinja2 syntax errors;
* undefined variables (a variable the task does not provide) and unused ones (a variable the task
  needs in its instruction, e.g. ``{{ question }}`` for VQA, that the template never reads).

Inputs: pool files (``.txt``, ``.yaml``, ``.json``; a file named after a task kind's default pool,
such as ``vqa_short.txt``, is checked against that kind's variables) or recipes, whose pools and
inline templates are checked against the tasks that use them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from vlitc.errors import InputError
from vlitc.recipe.load import Positions

_RUN_TOGETHER = re.compile(r"(?<=[a-z0-9)\]}\"'])[.?!](?=[A-Z])")
_NORM_PUNCT = re.compile(r"[^\w{}\s]+")
NEAR_DUPLICATE = 0.9


@dataclass(frozen=True, order=True)
class Finding:
    """One located lint finding."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Expect:
    """What a task kind provides to its templates and which variables it needs them to read.

    ``required`` is a tuple of alternatives: each entry is a set of which at least one is read.
    ``provided`` is None when unknown (no undefined/unused checks)."""

    provided: frozenset[str] | None = None
    required: tuple[frozenset[str], ...] = ()


def _norm(text: str) -> str:
    return " ".join(_NORM_PUNCT.sub(" ", text.casefold()).split())


def lint_templates(items: list[tuple[str, int]], file: str, expect: Expect = Expect()) -> list[Finding]:
    """Findings for a list of ``(template, line)`` from one file."""
    out: list[Finding] = []
    seen: dict[str, int] = {}
    kept: list[tuple[str, int]] = []
    for text, line in items:
        f = _one(text, line, file, expect)
        out += f
        key = _norm(text)
        if not key:
            continue
        if key in seen:
            out.append(Finding(file, line, f"duplicate template (same as line {seen[key]}): {text!r}"))
            continue
        seen[key] = line
        for other, oline in kept:
            ratio = difflib.SequenceMatcher(None, key, other, autojunk=False).ratio()
            if ratio >= NEAR_DUPLICATE:
                out.append(Finding(file, line, f"near-duplicate template ({ratio:.0%} like line {oline}): {text!r}"))
                break
        kept.append((key, line))
    return out


def _one(text: str, line: int, file: str, expect: Expect) -> list[Finding]:
    from vlitc.templating import ENV, TemplateProblem, variables

    out: list[Finding] = []
    bare = re.sub(r"\{#.*?#\}", "", text, flags=re.S).strip().strip("\"'").strip()
    if not bare:
        return [Finding(file, line, "empty template")]
    for m in _RUN_TOGETHER.finditer(text):
        left = text[: m.start() + 1].split()[-1] if text[: m.start() + 1].split() else ""
        right = text[m.end():].split()[0] if text[m.end():].split() else ""
        out.append(Finding(file, line, f"two sentences run together at {left + right!r} "
                                       "(a missing comma or space between two templates?)"))
    try:
        used = variables(text)
    except TemplateProblem as e:
        return out + [Finding(file, line + (e.line or 1) - 1, f"template {e.message}")]
    if not ENV.parse(text).body and not used:
        return out + [Finding(file, line, "empty template")]
    if expect.provided is not None:
        for name in sorted(used - expect.provided):
            close = difflib.get_close_matches(name, sorted(expect.provided), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(Finding(file, line, f"undefined variable {name!r}{hint} in {text!r}"))
        for alts in expect.required:
            if not alts & used:
                names = " or ".join(f"{{{{ {n} }}}}" for n in sorted(alts))
                out.append(Finding(file, line, f"unused variable: the template never reads {names}: {text!r}"))
    return out


# -- what tasks provide ------------------------------------------------------------------------

def expect_for(kind: str, params: dict | None = None) -> Expect:
    """The variables a task kind (with these params) provides and requires."""
    from vlitc.ops import registry

    cls = registry.get("task", kind)
    op = cls(dict(params or {}, source=(params or {}).get("source", "_")), "lint")
    provided = op.variables() if hasattr(op, "variables") else None
    return Expect(provided, tuple(getattr(op, "required", ())))


def expect_for_pool_file(path: Path) -> Expect:
    """The expectations of the task kind whose default pool has this file's name, if any."""
    from vlitc.ops import registry
    from vlitc.ops.tasks.base import AdaptTask

    for kind in registry.names("task"):
        cls = registry.get("task", kind)
        for per in (None, "token"):
            try:
                op = cls({"source": "_", **({"per": per} if per else {})}, "lint")
                pool = getattr(op, "default_pool", None)
            except Exception:  # noqa: BLE001 - a kind that needs params has no default pool
                continue
            if pool == path.stem and isinstance(op, AdaptTask):
                return Expect(op.variables(), tuple(getattr(op, "required", ())))
    return Expect()


# -- files and recipes -------------------------------------------------------------------------

def lint_file(path: Path, expect: Expect | None = None) -> list[Finding]:
    """Lint one pool file (a text, YAML or JSON list of templates)."""
    from vlitc.ops.pools import read_pool_file

    items = read_pool_file(path)
    if not items:
        return [Finding(str(path), 0, "pool file holds no templates")]
    return lint_templates(items, str(path), expect if expect is not None else expect_for_pool_file(path))


def _line_of(pos: Positions, *path: str | int) -> int:
    mark = pos.values.get(tuple(path))
    return mark[0] if mark else 0


def lint_recipe(path: Path) -> list[Finding]:
    """Lint the pools and inline templates of a recipe against the tasks that use them."""
    from vlitc.recipe.load import load_yaml

    data, root = load_yaml(path)  # the recipe loader: bounded, every problem located
    if not isinstance(data, dict):
        data = {}
    pools: dict = data["pools"] if isinstance(data.get("pools"), dict) else {}
    tasks: dict = data["tasks"] if isinstance(data.get("tasks"), dict) else {}
    users: dict[str, list[Expect]] = {}
    out: list[Finding] = []
    for name, t in tasks.items():
        if not isinstance(t, dict) or "kind" not in t:
            continue
        try:
            expect = expect_for(t["kind"], {k: v for k, v in t.items() if k != "kind"})
        except Exception:  # noqa: BLE001 - an unknown kind is the validator's finding, not lint's
            continue
        instr = t.get("instruction") or {}
        if "pool" in instr:
            users.setdefault(instr["pool"], []).append(expect)
        items = [(tpl if isinstance(tpl, str) else "",
                  _line_of(root, "tasks", name, "instruction", "templates", i))
                 for i, tpl in enumerate(instr.get("templates") or [])]
        out += lint_templates(items, str(path), expect)
        if isinstance(t.get("context"), str):
            out += _lint_context(t["context"], path, _line_of(root, "tasks", name, "context"))
    for name, p in pools.items():
        out += _lint_pool(path, root, name, p or {}, _merge(users.get(name, [])))
    return sorted(set(out))


def _lint_context(name: str, recipe: Path, line: int) -> list[Finding]:
    """A context template (built-in or ``.j2`` file) compiles in the sandbox and reads only
    what context templates are given."""
    from vlitc.llm.context import check_template

    try:
        check_template(name, recipe.parent)
    except InputError as e:
        loc = e.location
        if loc is None or not Path(loc.file).is_file():
            return [Finding(str(recipe), line, e.message)]
        return [Finding(loc.file, loc.line, e.message)]
    return []


def _merge(expects: list[Expect]) -> Expect:
    """One expectation for a pool several tasks use: what all provide, what all require."""
    known = [(e.provided, e.required) for e in expects if e.provided is not None]
    if not known:
        return Expect()
    provided = frozenset.intersection(*(p for p, _ in known))
    required = tuple({r for _, req in known for r in req})
    return Expect(provided, required)


def _lint_pool(recipe: Path, root: Positions, name: str, p: dict, expect: Expect) -> list[Finding]:
    if isinstance(p.get("file"), str):
        f = (recipe.parent / p["file"]).resolve()
        if not f.is_file():
            return [Finding(str(recipe), _line_of(root, "pools", name, "file"),
                            f"pool {name!r}: file not found: {p['file']}")]
        return lint_file(f, expect)
    key = "templates" if "templates" in p else "seeds"
    seq = p.get(key)
    if not isinstance(seq, list):
        return []
    items = [(t if isinstance(t, str) else "", _line_of(root, "pools", name, key, i))
             for i, t in enumerate(seq)]
    return lint_templates(items, str(recipe), expect)


def is_recipe(path: Path) -> bool:
    """A YAML mapping with a top-level ``vlitc`` or ``tasks`` key is a recipe, not a pool list."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return False
    from vlitc.errors import RecipeError
    from vlitc.recipe.load import load_yaml

    try:
        data, _ = load_yaml(path)
    except RecipeError:
        return True  # a YAML file that does not load: lint_recipe reports where, located
    return isinstance(data, dict) and bool({"vlitc", "tasks", "pools"} & set(data))


def lint_paths(paths: list[Path]) -> list[Finding]:
    """Lint recipes, pool files and folders of pool files."""
    out: list[Finding] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.suffix.lower() in (".txt", ".yaml", ".yml", ".json"):
                    out += lint_paths([f])
        elif is_recipe(p):
            out += lint_recipe(p)
        else:
            out += lint_file(p)
    return out
