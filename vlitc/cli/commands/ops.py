"""``vlitc ops [FAMILY [NAME]] [--markdown]``: the registered ops, from their docstrings and schemas."""

from __future__ import annotations

import argparse
import inspect
import json

from vlitc.ops import registry
from vlitc.recipe.schema import SECTIONS


def add_parser(sub) -> None:
    p = sub.add_parser("ops", help="list the ops a recipe can use, with their params",
                       description="list the ops a recipe can use, with their params")
    p.add_argument("family", nargs="?", choices=registry.FAMILIES, help="only this family")
    p.add_argument("name", nargs="?", help="only this op")
    p.add_argument("--markdown", action="store_true", help="write the reference as Markdown")
    p.set_defaults(func=run)


def _params(cls) -> list[tuple[str, str, str]]:
    schema = cls.params_schema
    required = set(schema.get("required", []))
    rows = []
    for name, sub in schema.get("properties", {}).items():
        kind = sub.get("type") or ("one of " + ", ".join(map(str, sub["enum"])) if "enum" in sub else "")
        if isinstance(kind, list):
            kind = " | ".join(kind)
        note = sub.get("description", "")
        if "default" in sub:
            note = (note + f" (default {json.dumps(sub['default'])})").strip()
        if name in required:
            note = ("required. " + note).strip()
        rows.append((name, str(kind), note))
    return rows


def _variables(cls) -> list[tuple[str, str]]:
    """``(what, "a, b, c")`` for each kind of template the op fills (tasks only)."""
    table = getattr(cls, "template_variables", None)
    return [(what, ", ".join(sorted(names))) for what, names in table().items()] if table else []


def _section(family: str) -> str:
    s = next(s for s in SECTIONS if s.family == family)
    return f"`{s.key}` entries, chosen by `{s.dispatch}:`"


def markdown(family: str | None = None) -> str:
    out = ["# vlitc ops", "",
           "Generated from the op registry (`vlitc ops --markdown`); every op's params are "
           "checked by the recipe schema (`vlitc schema`).", ""]
    for fam in registry.FAMILIES:
        if family and fam != family:
            continue
        names = registry.names(fam)
        if not names:
            continue
        out += [f"## {fam}", "", _section(fam), ""]
        for name in names:
            cls = registry.get(fam, name)
            out += [f"### `{name}`", "", inspect.cleandoc(cls.__doc__ or ""), ""]
            rows = _params(cls)
            if rows:
                out += ["| param | type | notes |", "|---|---|---|"]
                out += [f"| `{n}` | {k} | {d.replace('|', '/')} |" for n, k, d in rows]
                out.append("")
            for what, variables in _variables(cls):
                out += [f"Template variables ({what}): {variables}", ""]
    return "\n".join(out).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown(args.family), end="")
        return 0
    for fam in registry.FAMILIES:
        if args.family and fam != args.family:
            continue
        for name in registry.names(fam):
            if args.name and name != args.name:
                continue
            cls = registry.get(fam, name)
            first = inspect.cleandoc(cls.__doc__ or "").splitlines()[0] if cls.__doc__ else ""
            print(f"{fam:<10}{name:<18}{first}")
            if args.name:
                print()
                print(inspect.cleandoc(cls.__doc__ or ""))
                for n, k, d in _params(cls):
                    print(f"  {n:<20}{k:<12} {d}")
                for what, variables in _variables(cls):
                    print(f"  template variables ({what}): {variables}")
    return 0
