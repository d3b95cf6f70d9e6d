"""Every registered op has a docstring, a strict params schema, a version and a test that runs it
(``@pytest.mark.exercises``, enforced at run time by conftest: see tests/_op_contract.py)."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tests._op_contract import marked_ops, op_id
from vlitc.ops import registry

OPS = registry.all_ops()
MARKED = marked_ops()


def _strict(schema: dict) -> bool:
    return schema.get("type") == "object" and schema.get("additionalProperties") is False


@pytest.mark.parametrize("op", OPS, ids=[f"{o.family}.{o.name}" for o in OPS])
def test_op_contract(op):
    assert op.__doc__ and op.__doc__.strip(), "ops need a docstring (docs come from it)"
    assert _strict(op.params_schema), "params_schema must be an object with additionalProperties: false"
    Draft202012Validator.check_schema(op.params_schema)
    assert isinstance(op.version, int) and op.version >= 1
    assert MARKED.get(op_id(op)), (
        f"no test runs {op_id(op)}: mark one that builds it and asserts on its output with "
        f"@pytest.mark.exercises({op_id(op)!r})")


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


def test_the_contract_sees_only_marked_tests_that_assert(tmp_path, monkeypatch):
    import tests._op_contract as contract

    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.exercises('filter.words')\ndef test_runs():\n    assert True\n\n"
        "@pytest.mark.exercises('filter.turns')\ndef test_asserts_nothing():\n    pass\n\n"
        "def test_mentions_filter_dedup():\n    assert 'dedup'\n")
    monkeypatch.setattr(contract, "TESTS", tmp_path)
    assert contract.marked_ops() == {"filter.words": ["test_x.py::test_runs"]}


def test_recording_sees_an_op_only_when_its_family_method_runs(monkeypatch):
    from tests._op_contract import classes_for, recording

    cls = registry.get("filter", "min_words")
    with recording(classes_for(("filter.min_words", "filter.words")), monkeypatch.setattr) as called:
        op = cls({"min": 1}, "m")
        assert called == set()  # built, not run
        op.measure([], None)
    assert called == {"filter.min_words"}
