"""Validate a recipe: JSON Schema, then references, files and cycles; every problem at once."""

from __future__ import annotations

import difflib
import graphlib
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from vlitc.errors import Problem
from vlitc.ops import registry
from vlitc.paths import recipe_path
from vlitc.recipe.load import KeyPath, Positions
from vlitc.recipe.schema import FORMAT_VERSION, SECTIONS, build_schema

_VALIDATOR: Draft202012Validator | None = None
REF_SECTIONS = {"source": "sources", "pool": "pools", "generator": "generators", "task": "tasks"}


def validator() -> Draft202012Validator:
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = Draft202012Validator(build_schema())
    return _VALIDATOR


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _schema_problem(err: ValidationError, pos: Positions) -> list[Problem]:
    path: KeyPath = tuple(err.absolute_path)
    kind, schema = err.validator, err.schema
    hint = schema.get("description", "") if isinstance(schema, dict) else ""
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in sorted(set(err.instance) - set(allowed), key=str):
            msg = f"unknown key {key!r}" + _did_you_mean(str(key), allowed)
            out.append(pos.problem(path + (key,), msg, "allowed keys: " + ", ".join(allowed), at_key=True))
        return out
    if kind == "enum" and path and isinstance(err.instance, str):
        section = next((s for s in SECTIONS if s.key == path[0] and s.dispatch == path[-1]), None)
        names = list(err.validator_value)
        what = f"{section.family} {section.dispatch}" if section else "value"
        msg = f"unknown {what} {err.instance!r}" + _did_you_mean(err.instance, names)
        return [pos.problem(path, msg, "choose one of: " + ", ".join(names))]
    if kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        sub = schema.get("properties", {}).get(missing, {})
        return [pos.problem(path, f"missing required key {missing!r}", sub.get("description", hint), at_key=True)]
    if kind == "const" and path == ("vlitc",):
        return [pos.problem(path, f"unsupported recipe format {err.instance!r}",
                            f"this vlitc reads format {FORMAT_VERSION}: write 'vlitc: {FORMAT_VERSION}'")]
    if kind == "pattern" and "propertyNames" in err.schema_path:
        return [pos.problem(path + (err.instance,), f"invalid name {err.instance!r}",
                            "names use letters, digits, '_', '.', '-' and start with a letter", at_key=True)]
    if kind in ("anyOf", "oneOf") and err.context and all(e.validator == "required" for e in err.context):
        keys = sorted({e.message.split("'")[1] for e in err.context if "'" in e.message})
        return [pos.problem(path, "needs one of the keys " + ", ".join(repr(k) for k in keys),
                            hint, at_key=True)]
    if kind in ("anyOf", "oneOf") and isinstance(err.validator_value, list):
        return _forms_problem(err, pos, path, hint)
    return [pos.problem(path, err.message, hint)]


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "array": "a list", "object": "a mapping",
               "null": "null"}


def describe_form(schema: Any) -> str:
    """One allowed form of a ``oneOf``/``anyOf`` value in words: ``a mapping with key 'pool'``,
    ``a list of strings``, ``false``..."""
    if not isinstance(schema, dict):
        return "anything" if schema is True else "nothing"
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "$ref" in schema:
        return "a " + str(schema["$ref"]).rsplit("/", 1)[-1] + " entry"
    kind = schema.get("type")
    if kind == "object" or "required" in schema or "properties" in schema:
        keys = schema.get("required") or sorted(schema.get("properties") or {})
        if not keys:
            return "a mapping"
        plural = "s" if len(keys) > 1 else ""
        return f"a mapping with key{plural} " + ", ".join(repr(k) for k in keys)
    if kind == "array":
        items = schema.get("items")
        inner = describe_form(items) if isinstance(items, dict) and items else ""
        if inner.startswith(("a ", "an ")):
            inner = inner.split(" ", 1)[1]
            inner = inner if inner.endswith("s") else inner + "s"
            return f"a list of {inner}"
        return "a list"
    if isinstance(kind, str):
        return _TYPE_WORDS.get(kind, kind)
    if isinstance(kind, list):
        return " or ".join(_TYPE_WORDS.get(k, str(k)) for k in kind)
    return "a value matching " + json.dumps(schema, sort_keys=True)[:60]


def _branch_fits(branch: Any, instance: Any) -> bool:
    """Whether ``instance`` is of the branch's shape (its type, and its required keys present),
    so that what is wrong inside that branch is the useful message."""
    if not isinstance(branch, dict):
        return False
    kind = branch.get("type")
    if isinstance(instance, dict):
        if kind not in (None, "object") or "required" not in branch and "properties" not in branch:
            return kind == "object"
        return all(k in instance for k in branch.get("required", ()))
    types = {"string": str, "array": list, "boolean": bool}
    return isinstance(kind, str) and kind in types and isinstance(instance, types[kind])


def _forms_problem(err: ValidationError, pos: Positions, path: KeyPath, hint: str) -> list[Problem]:
    """A value that matches none of a ``oneOf``/``anyOf``: the problems inside the one form it
    is shaped like, else the list of the allowed forms."""
    branches = list(err.validator_value)
    fitting = [i for i, b in enumerate(branches) if _branch_fits(b, err.instance)]
    if len(fitting) == 1:
        inner = [e for e in err.context or [] if e.relative_schema_path
                 and e.relative_schema_path[0] == fitting[0]]
        if inner:
            return [p for e in inner for p in _schema_problem(e, pos)]
    forms = [describe_form(b) for b in branches]
    got = _TYPE_WORDS.get(_json_type(err.instance), "this value")
    msg = f"{got} is not allowed here; write " + (
        forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + " or " + forms[-1])
    return [pos.problem(path, msg, hint)]


def _json_type(v: Any) -> str:
    for name, t in (("boolean", bool), ("integer", int), ("number", float), ("string", str),
                    ("array", list), ("object", dict)):
        if isinstance(v, t):
            return name
    return "null" if v is None else "value"


def schema_problems(data: Any, pos: Positions, bad: set[KeyPath] | None = None) -> list[Problem]:
    """Every schema violation, located; ``bad`` collects the key paths of the section entries
    (``("sources", "coco")``, ``("filters", 0)``, ``("balance",)``) that have one."""
    out: list[Problem] = []
    for err in validator().iter_errors(data):
        if bad is not None:
            bad.add(_entry_of(tuple(err.absolute_path)))
        if err.validator in ("allOf", "if") and err.context:
            for sub in err.context:
                out += _schema_problem(sub, pos)
            continue
        out += _schema_problem(err, pos)
    return out


def _entry_of(path: KeyPath) -> KeyPath:
    section = next((s for s in SECTIONS if path and s.key == path[0]), None)
    if section is None:
        return path[:1]
    return path[:1] if section.shape == "single" else path[:2]


def package_problems(entries: list[tuple[KeyPath, Any]], pos: Positions,
                     data: dict | None = None) -> list[Problem]:
    """Ops that need a package that is not installed (an extra), and an execution engine that
    needs one (``execution: {engine: ray}``), found before anything runs."""
    import importlib.util

    from vlitc.errors import install_hint

    out: list[Problem] = []
    execution = (data or {}).get("execution")
    if isinstance(execution, dict) and execution.get("engine") == "ray" \
            and importlib.util.find_spec("ray") is None:
        out.append(pos.problem(("execution", "engine"), "the ray engine needs the package 'ray', "
                                                        "which is not installed", install_hint("ray")))
    for path, op in entries:
        for module in op.packages():
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(pos.problem(path, f"{op.family} {op.name!r} needs the package "
                                             f"{module!r}, which is not installed",
                                       install_hint(module)))
    return out


def find_value(obj: Any, value: str, path: KeyPath = ()) -> KeyPath | None:
    """Key path of the first occurrence of ``value`` in ``obj``, breadth first, as a value or as a
    mapping key: where a reference or an inline template is written, for a located message."""
    queue: list[tuple[Any, KeyPath]] = [(obj, path)]
    for cur, at in queue:
        if cur == value:
            return at
        if isinstance(cur, dict):
            if value in cur:
                return at + (value,)
            queue += [(v, at + (k,)) for k, v in cur.items()]
        elif isinstance(cur, list):
            queue += [(v, at + (i,)) for i, v in enumerate(cur)]
    return None


def reference_problems(entries: list[tuple[KeyPath, Any]], data: dict, pos: Positions) -> list[Problem]:
    """Dangling references: a task naming a missing source, pool, generator or task."""
    out: list[Problem] = []
    for path, op in entries:
        params = op.params
        for kind, names in op.references().items():
            section = REF_SECTIONS.get(kind)
            if section is None:
                continue
            sec = data.get(section)
            if sec is not None and not isinstance(sec, dict):
                continue  # the schema reports the section itself
            have = [str(k) for k in (sec or {})]
            for name in names:
                if name in have:
                    if kind == "generator":
                        out += _vision_problems(path, params, name, data, pos)
                    continue
                where = find_value(params, name, path) or path
                msg = f"{kind} {name!r} is not defined in '{section}'" + _did_you_mean(name, have)
                hint = f"defined {section}: {', '.join(have)}" if have else f"add it under '{section}:'"
                out.append(pos.problem(where, msg, hint, at_key=bool(where) and where[-1] == name))
    return out


def _vision_problems(path: KeyPath, params: dict, name: str, data: dict, pos: Positions
                     ) -> list[Problem]:
    """An op that shows images (``image: true``) to a generator that does not read them."""
    gen = (data.get("generators") or {}).get(name)
    if params.get("image") is not True or not isinstance(gen, dict) or gen.get("vision") is True:
        return []
    return [pos.problem(path + ("image",), f"image: true sends images, but generator {name!r} "
                        "does not declare vision: true",
                        f"add vision: true to generators.{name} (a model that reads images), "
                        "or drop image: true")]


def file_problems(entries: list[tuple[KeyPath, Any]], recipe_dir: Path, pos: Positions) -> list[Problem]:
    out: list[Problem] = []
    for path, op in entries:
        for key in op.file_params:
            val = op.params.get(key)
            for i, v in enumerate(val if isinstance(val, list) else [val]):
                if isinstance(v, str) and not recipe_path(recipe_dir, v).exists():
                    where = path + (key,) + ((i,) if isinstance(val, list) else ())
                    out.append(pos.problem(where, f"file not found: {v}",
                                           f"relative paths resolve against {recipe_dir}"))
        folder = op.image_folder()
        if folder is not None and not recipe_path(recipe_dir, folder).is_dir():
            out.append(pos.problem(path + (op.image_folder_param,), f"image folder not found: {folder}",
                                   f"relative paths resolve against {recipe_dir}"))
    return out


#: params of exporters that name a place inside the release folder
OUTPUT_PATH_PARAMS = ("path", "image_dir")


def path_problems(entries: list[tuple[KeyPath, Any]], recipe_dir: Path, pos: Positions) -> list[Problem]:
    """Output paths that would leave the release folder (absolute, ``..``), found before anything
    runs, with the check the exporters apply (:func:`vlitc.paths.relative_problem`)."""
    from vlitc.paths import relative_problem

    out: list[Problem] = []
    for path, op in entries:
        if op.family != "exporter":
            continue
        for key in OUTPUT_PATH_PARAMS:
            val = op.params.get(key)
            if val is None:
                continue
            why = relative_problem(val)
            if why is not None:
                out.append(pos.problem(path + (key,), f"{val!r} {why}",
                                       "outputs are written inside the release folder (--out): "
                                       "give a relative path without '..'"))
    return out


def cycle_problems(entries: list[tuple[KeyPath, Any]], pos: Positions) -> list[Problem]:
    graph: dict[str, set[str]] = {}
    where: dict[str, KeyPath] = {}
    for path, op in entries:
        if len(path) != 2 or path[0] not in ("sources", "pools", "tasks"):
            continue
        node = f"{path[0][:-1]}:{path[1]}"
        where[node] = path
        deps = graph.setdefault(node, set())
        for kind, names in op.references().items():
            if kind in ("source", "pool", "task"):
                deps.update(f"{kind}:{n}" for n in names)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        cycle = e.args[1]
        first = next((n for n in cycle if n in where), cycle[0])
        return [pos.problem(where.get(first, ()), "dependency cycle: " + " -> ".join(cycle),
                            "a task or source cannot depend on itself, directly or through others")]
    return []


def section_entries(data: dict) -> list[tuple[KeyPath, str, dict]]:
    """Every op entry in the recipe as (key path, family, params)."""
    out: list[tuple[KeyPath, str, dict]] = []
    for s in SECTIONS:
        val = data.get(s.key)
        if s.shape == "map" and isinstance(val, dict):
            out += [((s.key, k), s.family, v) for k, v in val.items() if isinstance(v, dict)]
        elif s.shape == "list" and isinstance(val, list):
            out += [((s.key, i), s.family, v) for i, v in enumerate(val) if isinstance(v, dict)]
        elif s.shape == "single" and isinstance(val, dict):
            out.append(((s.key,), s.family, val))
    return out


def fill_defaults(data: dict) -> None:
    """Add default dispatch keys, then each op's top-level param defaults, in place."""
    for s in SECTIONS:
        if s.default is None:
            continue
        val = data.get(s.key)
        entries = list(val.values()) if s.shape == "map" and isinstance(val, dict) else (
            [val] if isinstance(val, dict) else [])
        for e in entries:
            if isinstance(e, dict) and s.dispatch not in e:
                e[s.dispatch] = s.default
    for _path, family, params in section_entries(data):
        disp = next(s.dispatch for s in SECTIONS if s.family == family)
        if not isinstance(params.get(disp, ""), str):
            continue
        try:
            cls = registry.get(family, params.get(disp, ""))
        except KeyError:
            continue
        params.update(cls.with_defaults(params))
