"""The recipe snippets in the README are valid against the schema (files aside)."""

from __future__ import annotations

import re

import yaml

from vlitc.recipe.load import Positions
from vlitc.recipe.validate import fill_defaults, schema_problems


def test_readme_recipe_examples_pass_the_schema(repo_root):
    text = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    full = yaml.safe_load(blocks[0])
    fill_defaults(full)
    problems = schema_problems(full, Positions("README.md", blocks[0].splitlines()))
    assert [p.format() for p in problems] == []
    for block in blocks[1:]:  # fragments: merge them into the full example
        part = yaml.safe_load(block)
        merged = {**full, **{k: {**full.get(k, {}), **v} for k, v in part.items()}}
        fill_defaults(merged)
        problems = schema_problems(merged, Positions("README.md", block.splitlines()))
        assert [p.format() for p in problems] == []
