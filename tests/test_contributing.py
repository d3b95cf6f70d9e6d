"""CONTRIBUTING.md's end-to-end filter example builds, and its layout names every folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vlitc.ops import registry

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "CONTRIBUTING.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


@pytest.fixture
def example_op():
    """The example op registered for one test, then removed (the schema is built without it)."""
    import vlitc.recipe.validate as validate

    namespace: dict = {"__name__": "contributing_example"}
    exec(compile(BLOCKS[0], "CONTRIBUTING.md", "exec"), namespace)  # noqa: S102 - our own doc
    validate._VALIDATOR = None
    try:
        yield registry.get("filter", "no_urls")
    finally:
        registry._REGISTRY["filter"].pop("no_urls", None)
        validate._VALIDATOR = None


def test_the_example_filter_keeps_the_contract_and_its_test_passes(example_op, monkeypatch):
    from tests._op_contract import classes_for, recording
    from tests.test_op_params import stated_defaults
    from tests.test_registry_contract import _strict, test_declared_traits_match_the_schema

    assert _strict(example_op.params_schema) and example_op.__doc__
    test_declared_traits_match_the_schema(example_op)
    assert stated_defaults(BLOCKS[0]) == []
    namespace: dict = {}
    exec(compile(BLOCKS[1], "CONTRIBUTING.md", "exec"), namespace)  # noqa: S102
    with recording(classes_for(("filter.no_urls",)), monkeypatch.setattr) as called:
        namespace["test_no_urls_drops_answers_with_web_addresses"]()
    assert called == {"filter.no_urls"}


def test_a_recipe_using_the_example_filter_validates_and_builds(example_op, tmp_path):
    from tests._core_util import demo_copy
    from vlitc import build

    path = demo_copy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["filters"].append({"type": "no_urls"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = build(path, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    steps = {s["id"]: s for s in result.manifest["steps"]}
    assert steps["filter:no_urls"]["status"] == "ran"


def test_the_layout_names_every_package_folder():
    folders = {p.name for p in (ROOT / "vlitc").iterdir() if p.is_dir() and not p.name.startswith("_")}
    readme = (ROOT / "README.md").read_text()
    for name in sorted(folders):
        assert f"`vlitc/{name}`" in TEXT, f"CONTRIBUTING.md's layout does not name vlitc/{name}"
        assert f"`vlitc/{name}`" in readme, f"README.md's code layout does not name vlitc/{name}"
    named = set(re.findall(r"`vlitc/(\w+)`", TEXT.split("## Layout")[1]))
    assert named <= folders, f"CONTRIBUTING.md names folders that do not exist: {named - folders}"
