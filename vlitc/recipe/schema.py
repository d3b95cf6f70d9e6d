"""The recipe JSON Schema (2020-12), composed from each registered op's params fragment.

Each section entry is dispatched on one key (``type``, ``kind``, ``provider``, ``format``) with an
``if``/``then`` per op, so a validation error is reported against the op's own fragment
(``additionalProperties: false``: a typo fails) rather than as a ``oneOf`` mismatch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from vlitc.ops import registry

FORMAT_VERSION = 1
NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_.-]*$"


@dataclass(frozen=True)
class Section:
    """A recipe section whose entries are ops of one family."""

    key: str  # top-level recipe key
    family: str  # registry family
    dispatch: str  # the entry key naming the op
    shape: str  # "map" (name -> entry), "list", or "single"
    default: str | None = None  # op used when the dispatch key is absent
    extra: tuple[tuple[str, dict], ...] = ()  # properties the core adds to every entry


_DESCRIPTION = ("description", {"type": "string", "description": "free text; never affects caching"})

SECTIONS = (
    Section("sources", "source", "type", "map", extra=(_DESCRIPTION, (
        "license", {"type": "string", "description": "licence of the data, shown in the dataset card"}))),
    Section("pools", "pool", "type", "map", default="list", extra=(_DESCRIPTION,)),
    Section("generators", "generator", "provider", "map", extra=(_DESCRIPTION,)),
    Section("tasks", "task", "kind", "map", extra=(_DESCRIPTION, (
        "include", {"type": "boolean", "default": True,
                    "description": "false: the task only feeds other tasks and is not released"}))),
    Section("filters", "filter", "type", "list", extra=(_DESCRIPTION, (
        "name", {"type": "string", "pattern": NAME_PATTERN,
                 "description": "step name (default: the filter type)"}), (
        "tasks", {"type": "array", "items": {"type": "string"}, "minItems": 1,
                  "description": "only these tasks are filtered; others pass through"}))),
    Section("balance", "balance", "type", "single", default="mix", extra=(_DESCRIPTION,)),
    Section("outputs", "exporter", "format", "list", extra=(_DESCRIPTION,)),
    Section("report", "report", "type", "single", default="release", extra=(_DESCRIPTION,)),
)

SECTION_BY_KEY = {s.key: s for s in SECTIONS}


def _entry_schema(section: Section) -> tuple[dict, dict]:
    names = registry.names(section.family)
    defs: dict = {}
    branches = []
    for name in names:
        cls = registry.get(section.family, name)
        frag = copy.deepcopy(cls.params_schema)
        props = frag.setdefault("properties", {})
        props[section.dispatch] = {"const": name}
        for key, sub in section.extra:
            props.setdefault(key, sub)
        frag.setdefault("type", "object")
        frag.setdefault("additionalProperties", False)
        if cls.__doc__:
            frag.setdefault("description", cls.__doc__.strip().splitlines()[0])
        ref = f"{section.family}.{name}"
        defs[ref] = frag
        # the default op also applies when the dispatch key is absent (``properties`` only
        # checks keys that are present), as ``vlitc validate`` fills it in
        cond: dict = {"properties": {section.dispatch: {"const": name}}}
        if name != section.default:
            cond["required"] = [section.dispatch]
        branches.append({"if": cond, "then": {"$ref": f"#/$defs/{ref}"}})
    dispatch: dict = {"type": "string", "enum": names}
    entry: dict = {"type": "object", "properties": {section.dispatch: dispatch}, "allOf": branches}
    if section.default is None:
        entry["required"] = [section.dispatch]
    else:
        dispatch["default"] = section.default
    return entry, defs


def build_schema() -> dict:
    """The full recipe schema for the ops registered now."""
    defs: dict = {}
    props: dict = {
        "vlitc": {"const": FORMAT_VERSION, "description": "recipe format version (1)"},
        "name": {"type": "string", "pattern": NAME_PATTERN,
                 "description": "release name: letters, digits, '_', '.', '-'"},
        "version": {"type": "string", "description": "release version, e.g. 0.1.0"},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "seed for every random choice in the build"},
        "description": {"type": "string"},
        "budget": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "max_usd": {"type": "number", "exclusiveMinimum": 0,
                            "description": "stop generating once this much is spent"},
                "max_tokens": {"type": "integer", "minimum": 1,
                               "description": "stop generating once this many tokens are used"},
            },
        },
    }
    from vlitc.run.engine import EXECUTION_SCHEMA

    props["execution"] = EXECUTION_SCHEMA
    for section in SECTIONS:
        entry, entry_defs = _entry_schema(section)
        defs.update(entry_defs)
        defs[section.family] = entry
        ref = {"$ref": f"#/$defs/{section.family}"}
        if section.shape == "map":
            props[section.key] = {"type": "object", "propertyNames": {"pattern": NAME_PATTERN},
                                  "additionalProperties": ref}
        elif section.shape == "list":
            props[section.key] = {"type": "array", "items": ref}
        else:
            props[section.key] = ref
    props["outputs"]["minItems"] = 1
    props["report"] = {"anyOf": [props["report"], {"const": False}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/vlitc/vlitc/schemas/recipe.schema.json",
        "title": "vlitc recipe",
        "type": "object",
        "required": ["vlitc", "name", "outputs"],
        "additionalProperties": False,
        "properties": props,
        "$defs": dict(sorted(defs.items())),
    }
