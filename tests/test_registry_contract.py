"""Every registered op has a docstring, a strict params schema, a version and a test."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from vlitc.ops import registry

TESTS = Path(__file__).resolve().parent
ALL_TEST_TEXT = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
OPS = registry.all_ops()


def _strict(schema: dict) -> bool:
    return schema.get("type") == "object" and schema.get("additionalProperties") is False


@pytest.mark.parametrize("op", OPS, ids=[f"{o.family}.{o.name}" for o in OPS])
def test_op_contract(op):
    assert op.__doc__ and op.__doc__.strip(), "ops need a docstring (docs come from it)"
    assert _strict(op.params_schema), "params_schema must be an object with additionalProperties: false"
    Draft202012Validator.check_schema(op.params_schema)
    assert isinstance(op.version, int) and op.version >= 1
    assert op.name in ALL_TEST_TEXT, f"no test mentions {op.family} op {op.name!r}"


def test_duplicate_registration_raises():
    from vlitc.ops.base import Op

    with pytest.raises(ValueError, match="registered twice"):
        registry.register("source", "coco")(type("Dup", (Op,), {}))


def test_unknown_name_suggests_close_ones():
    with pytest.raises(registry.UnknownOpError, match="did you mean 'coco'"):
        registry.get("source", "cocco")


@pytest.mark.parametrize("op", OPS, ids=[f"{o.family}.{o.name}" for o in OPS])
def test_declared_traits_match_the_schema(op):
    props = op.params_schema.get("properties", {})
    if op.image_folder_param is not None:
        assert props.get(op.image_folder_param, {}).get("type") == "string", "the image folder is a path param"
    else:
        assert "images" not in props or op.family != "source", "a source with an images param declares it"
    for field in (*op.reads, *op.writes):
        assert field and all(a and " " not in a for a in field.rstrip("?").split("|")), field
