"""The published schema (``schemas/recipe.schema.json``) read by a plain Draft 2020-12 validator,
as editors run it: it accepts exactly what ``vlitc validate`` accepts at the schema level."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from jsonschema import Draft202012Validator

from vlitc.recipe.load import Positions, load_yaml
from vlitc.recipe.validate import fill_defaults, schema_problems

MODELINE = "# yaml-language-server: $schema=../schemas/recipe.schema.json"


@pytest.fixture(scope="module")
def plain(request) -> Draft202012Validator:
    root = request.config.rootpath
    schema = json.loads((root / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _vlitc_accepts(data: dict) -> bool:
    data = copy.deepcopy(data)
    fill_defaults(data)
    return not schema_problems(data, Positions("recipe.yaml", []))


def _recipes(repo_root):
    return sorted((repo_root / "recipes").glob("*.yaml"))


def test_every_shipped_recipe_passes_the_plain_validator(plain, repo_root):
    recipes = _recipes(repo_root)
    assert len(recipes) >= 5
    for path in recipes:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in plain.iter_errors(data)]
        assert errors == [], path.name
        assert _vlitc_accepts(data), path.name


def test_every_shipped_recipe_carries_the_schema_modeline(repo_root):
    for path in _recipes(repo_root):
        assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE, path.name


def test_readme_snippets_pass_the_plain_validator(plain, repo_root):
    blocks = re.findall(r"```yaml\n(.*?)```", (repo_root / "README.md").read_text(), re.S)
    full = yaml.safe_load(blocks[0])
    assert list(plain.iter_errors(full)) == []
    for block in blocks[1:]:
        part = yaml.safe_load(block)
        merged = {**full, **{k: {**full.get(k, {}), **v} for k, v in part.items()}}
        assert [e.message for e in plain.iter_errors(merged)] == []


def _variants(base: dict) -> list[tuple[str, dict]]:
    """Edits of a valid recipe, some valid and some not, to compare both validators on."""
    out = []

    def variant(name, edit):
        d = copy.deepcopy(base)
        edit(d)
        out.append((name, d))

    variant("as is", lambda d: None)
    variant("pool without type", lambda d: d["pools"].update({"p": {"templates": ["Hi?"]}}))
    variant("pool with type", lambda d: d["pools"].update({"p": {"type": "list", "templates": ["Hi?"]}}))
    variant("pool unknown key", lambda d: d["pools"].update({"p": {"templatez": ["Hi?"]}}))
    variant("pool unknown type", lambda d: d["pools"].update({"p": {"type": "lisst", "templates": ["x"]}}))
    variant("balance without type", lambda d: d.update({"balance": {"total": 10}}))
    variant("balance bad key", lambda d: d.update({"balance": {"totl": 10}}))
    variant("report false", lambda d: d.update({"report": False}))
    variant("report without type", lambda d: d.update({"report": {}}))
    variant("report unknown key", lambda d: d.update({"report": {"bogus": 1}}))
    variant("task without kind", lambda d: d["tasks"].update({"t": {"source": "coco"}}))
    variant("instruction string", lambda d: d["tasks"]["brief_caption"].update(
        {"instruction": "a string"}))
    variant("filter without type", lambda d: d.setdefault("filters", []).append({"max_words": 3}))
    variant("no outputs", lambda d: d.update({"outputs": []}))
    variant("export without format", lambda d: d["outputs"].append({"path": "x.json"}))
    return out


def test_plain_validator_and_vlitc_validate_agree(plain, repo_root):
    base = yaml.safe_load((repo_root / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    seen = set()
    for name, data in _variants(base):
        verdict = plain.is_valid(data)
        assert verdict == _vlitc_accepts(data), name
        seen.add(verdict)
    assert seen == {True, False}


def test_one_of_errors_name_the_allowed_forms(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "vlitc: 1\nname: t\nsources:\n  coco: {type: coco, images: i, captions: c.json}\n"
        "tasks:\n"
        "  a: {kind: template, source: coco, instruction: \"a string\", response: x}\n"
        "  b: {kind: template, source: coco, instruction: {pool: 3}, response: x}\n"
        "outputs:\n  - {format: llava, path: train.json}\n", encoding="utf-8")
    data, pos = load_yaml(recipe)
    fill_defaults(data)
    problems = {p.path: p for p in schema_problems(data, pos)}
    a = problems["tasks.a.instruction"]
    assert "not valid under any" not in a.message
    assert "a mapping with key 'pool'" in a.message and "a mapping with key 'templates'" in a.message
    assert a.location.line == 6 and "{pool: NAME}" in a.hint
    # shaped like one form: what is wrong inside it
    assert problems["tasks.b.instruction.pool"].message == "3 is not of type 'string'"
