"""Op params have one source of defaults, the op's ``params_schema``.

Ops read ``self.params["key"]``: the loader fills each schema default into the recipe and every
op fills them again when it is built, so op code stating a default of its own
(``params.get("key", 3)``, ``params.get("key") or "x"``) is a second source of truth that can
drift from the schema, the docs and the step key.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from vlitc.ops import registry

OPS_DIR = Path(__file__).resolve().parents[1] / "vlitc" / "ops"
OPS = registry.all_ops()
IDS = [f"{o.family}.{o.name}" for o in OPS]


def _params_names(func: ast.AST) -> set[str]:
    """Local names bound to an op's params in a function (``p = self.params``, ``params`` args)."""
    names = {"params"}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "params":
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _is_params_get(node: ast.AST, names: set[str]) -> bool:
    """``<x>.params.get("key", ...)`` or ``params.get("key", ...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return False
    recv = node.func.value
    return (isinstance(recv, ast.Attribute) and recv.attr == "params") or \
        (isinstance(recv, ast.Name) and recv.id in names)


def _non_empty_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value not in (None, "", 0, False)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return bool(node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.keys)
    return False


def stated_defaults(source: str) -> list[tuple[int, str]]:
    """(line, code) of every default that op code states for a param."""
    tree = ast.parse(source)
    out: list[tuple[int, str]] = []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for func in funcs:
        names = _params_names(func)
        for node in ast.walk(func):
            if _is_params_get(node, names):
                assert isinstance(node, ast.Call)
                fallback = node.args[1] if len(node.args) > 1 else None
                if fallback is not None and not (isinstance(fallback, ast.Constant) and fallback.value is None):
                    out.append((node.lineno, ast.unparse(node)))
            elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) \
                    and _is_params_get(node.values[0], names) \
                    and any(_non_empty_literal(v) for v in node.values[1:]):
                out.append((node.lineno, ast.unparse(node)))
    return sorted(set(out))


def test_op_code_states_no_default_of_its_own():
    found = []
    for path in sorted(OPS_DIR.rglob("*.py")):
        found += [f"{path.relative_to(OPS_DIR.parent.parent)}:{line}: {code}"
                  for line, code in stated_defaults(path.read_text())]
    assert not found, "defaults belong in params_schema; read self.params[key]:\n" + "\n".join(found)


@pytest.mark.parametrize("code", [
    'def f(self):\n    return self.params.get("n", 4)\n',
    'def f(self):\n    p = self.params\n    return p.get("n", 4)\n',
    'def f(params):\n    return params.get("mode", "auto")\n',
    'def f(self):\n    return self.params.get("relations") or ["left"]\n',
    'def f(self):\n    return self.params.get("x", DEFAULT)\n',
])
def test_the_scan_finds_stated_defaults(code):
    assert stated_defaults(code), code


@pytest.mark.parametrize("code", [
    'def f(self):\n    return self.params["n"]\n',
    'def f(self):\n    return self.params.get("limit")\n',
    'def f(self):\n    return self.params.get("mix") or {}\n',
    'def f(self, rec):\n    return rec.get("kind", "ref")\n',
])
def test_the_scan_passes_plain_reads(code):
    assert not stated_defaults(code), code


def _defaults(op) -> dict:
    props = op.params_schema.get("properties", {})
    return {k: sub["default"] for k, sub in props.items() if isinstance(sub, dict) and "default" in sub}


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_every_schema_default_is_valid_and_what_the_op_receives(op):
    props = op.params_schema.get("properties", {})
    for key, value in _defaults(op).items():
        sub = {k: v for k, v in props[key].items() if k != "default"}
        assert not list(Draft202012Validator(sub).iter_errors(value)), f"default of {key!r} fails its schema"
    built = op({}, "t")
    for key, value in _defaults(op).items():
        assert built.params[key] == value, key
    given = {k: v for k, v in list(_defaults(op).items())[:1]}
    assert op(given, "t").params == built.params, "a given value is kept, the rest filled"


def test_defaults_are_copies_not_shared_between_ops():
    cls = registry.get("filter", "leakage")
    a, b = cls({}, "a"), cls({}, "b")
    a.params["extra"].append("x")
    assert b.params["extra"] == [] and cls.params_schema["properties"]["extra"]["default"] == []


def test_a_loaded_recipe_gives_each_op_the_same_params_as_building_it_directly(tmp_path):
    import yaml

    from tests._core_util import demo_copy
    from vlitc.recipe import load_recipe
    from vlitc.recipe.schema import SECTIONS

    path = demo_copy(tmp_path)
    written = yaml.safe_load(path.read_text())
    recipe = load_recipe(path)
    for where, op in recipe.ops.items():
        section = next(s for s in SECTIONS if s.key == where[0])
        raw = written[where[0]] if section.shape == "single" else written[where[0]][where[1]]
        given = {k: v for k, v in raw.items() if k != section.dispatch}
        assert type(op)(given, op.label).params == op.params, where
        assert set(_defaults(op)) <= set(op.params), where
