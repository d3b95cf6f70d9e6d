"""Declared reads are checked against what each op's inputs write, before anything is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from vlitc.errors import RecipeError
from vlitc.ops.base import Filter
from vlitc.recipe import load_recipe
from vlitc.recipe.fields import field_problems, missing

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "data" / "demo"

RECIPE = """\
vlitc: 1
name: t
sources:
  coco:
    type: coco
    images: {images}
    captions: {captions}
  photos:
    type: image_folder
    images: {images}
tasks:
  cap:
    kind: brief_caption
    source: {source}
  again:
    kind: rewrite
    task: [cap]
    generator: g
generators:
  g: {{provider: mock, model: m}}
filters:
  - {{type: hallucination}}
outputs:
  - {{format: llava, path: train.json}}
"""


def write(tmp_path: Path, source: str = "coco") -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(images=DEMO / "images", captions=DEMO / "annotations" / "captions_demo.json",
                               source=source))
    return p


def test_a_task_reading_a_layer_its_source_never_writes_is_a_located_error(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, source="photos"))
    (p,) = e.value.problems
    assert (p.location.line, p.location.column) == (13, 5)
    assert p.message == "task 'cap' (brief_caption) reads captions, which source 'photos' never writes"
    assert p.hint == "source 'photos' writes: id, image"


def test_the_cli_reports_it_with_exit_2_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlitc.cli.main", "validate", str(write(tmp_path, "photos"))],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "r.yaml:13:5: tasks.cap: task 'cap' (brief_caption) reads captions" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_fields_pass_through_a_rewrite_and_satisfy_later_filters(tmp_path):
    recipe = load_recipe(write(tmp_path))  # hallucination reads meta.annotations of 'again' too
    assert field_problems(recipe.ops, recipe.positions) == []


class _ContextFilter(Filter):
    """A filter that needs the generator's context (as an LLM judge without fallback would)."""

    reads: ClassVar[tuple[str, ...]] = ("turns", "meta.context")
    writes: ClassVar[tuple[str, ...]] = ("meta.stats",)


def test_a_filter_reading_a_field_no_task_it_sees_writes_is_an_error(tmp_path):
    recipe = load_recipe(write(tmp_path))
    ops = dict(recipe.ops)
    ops[("filters", 0)] = _ContextFilter({}, "ctx")
    problems = field_problems(ops, recipe.positions)
    assert [p.message for p in problems] == [
        "filter 'ctx' () reads meta.context, which task 'cap' never writes",
        "filter 'ctx' () reads meta.context, which task 'again' never writes",
    ]
    assert problems[0].location.line == 22
    assert "name the tasks it applies to with 'tasks: [...]'" in problems[0].hint
    ops[("filters", 0)] = _ContextFilter({"tasks": ["cap"]}, "ctx")
    assert [p.message for p in field_problems(ops, recipe.positions)] == [
        "filter 'ctx' () reads meta.context, which task 'cap' never writes"]


@pytest.mark.parametrize(("reads", "have", "lacks"), [
    (("turns",), {"turns"}, []),
    (("meta.context|meta.annotations",), {"meta.annotations"}, []),
    (("meta.context|meta.annotations",), {"turns"}, ["meta.context|meta.annotations"]),
    (("meta.finish_reasons?",), set(), []),
    (("captions", "qas"), {"captions"}, ["qas"]),
])
def test_alternatives_and_optional_reads(reads, have, lacks):
    assert missing(reads, frozenset(have)) == lacks
