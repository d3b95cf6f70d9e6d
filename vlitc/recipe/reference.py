"""The op reference: every registered op from its docstring and params schema (``docs/ops.md``,
``vlitc ops``)."""

from __future__ import annotations

import inspect
import json

from vlitc.ops import registry
from vlitc.recipe.schema import SECTIONS


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


def listing(family: str | None = None, name: str | None = None) -> str:
    """One line per op (family, name, first docstring line); with ``name``, its whole docstring,
    params and template variables too."""
    out: list[str] = []
    for fam in registry.FAMILIES:
        if family and fam != family:
            continue
        for op_name in registry.names(fam):
            if name and op_name != name:
                continue
            cls = registry.get(fam, op_name)
            doc = inspect.cleandoc(cls.__doc__ or "")
            out.append(f"{fam:<10}{op_name:<18}{doc.splitlines()[0] if doc else ''}")
            if name:
                out += ["", doc]
                out += [f"  {n:<20}{k:<12} {d}" for n, k, d in _params(cls)]
                out += [f"  template variables ({what}): {v}" for what, v in _variables(cls)]
    return "\n".join(out) + ("\n" if out else "")
