"""Malformed recipes: each gives its exact located message (file:line:col: key path: message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlitc.errors import RecipeError
from vlitc.recipe import load_recipe

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "data" / "demo"

BASE = """\
vlitc: 1
name: t
seed: 1
sources:
  coco:
    type: coco
    images: {images}
    captions: {captions}
pools:
  brief:
    templates: ["Describe the image."]
tasks:
  cap:
    kind: template
    source: coco
    instruction: {{pool: brief}}
    response: "{{{{ caption }}}}"
    per: caption
filters:
  - {{type: min_words, min: 1}}
outputs:
  - {{format: llava, path: train.json}}
"""


def base_text() -> str:
    return BASE.format(images=DEMO / "images", captions=DEMO / "annotations" / "captions_demo.json")


# (case id, (old, new) replacements applied to the base recipe, expected message lines)
CASES = [
    ("yaml_syntax", [("name: t", "name: [t")],
     ["r.yaml:2:7: YAML syntax error: a flow sequence that starts here is not closed: "
      "expected ',' or ']', but got ':' at line 3, column 5"]),
    ("tab_indent", [("seed: 1", "seed:\t1\n\tx: 2")],
     ["r.yaml:3:6: YAML syntax error: found character '\\t' that cannot start any token"]),
    ("duplicate_key", [("seed: 1", "seed: 1\nseed: 2")],
     ["r.yaml:4:1: seed: duplicate key 'seed' (first defined on line 3)"]),
    ("not_mapping", [("", "")], None),
    ("format_version", [("vlitc: 1", "vlitc: 2")],
     ["r.yaml:1:8: vlitc: unsupported recipe format 2"]),
    ("missing_name", [("name: t\n", "")], ["r.yaml:1:1: missing required key 'name'"]),
    ("bad_name", [("name: t", "name: 'my release'")],
     ["r.yaml:2:7: name: 'my release' does not match '^[A-Za-z_][A-Za-z0-9_.-]*$'"]),
    ("negative_seed", [("seed: 1", "seed: -1")], ["r.yaml:3:7: seed: -1 is less than the minimum of 0"]),
    ("seed_string", [("seed: 1", "seed: one")], ["r.yaml:3:7: seed: 'one' is not of type 'integer'"]),
    ("unknown_top_key", [("seed: 1", "seed: 1\nsauces: {}")],
     ["r.yaml:4:1: sauces: unknown key 'sauces'; did you mean 'sources'?"]),
    ("unknown_source_type", [("type: coco", "type: cocoo")],
     ["r.yaml:6:11: sources.coco.type: unknown source type 'cocoo'; did you mean 'coco' or 'refcoco'?"]),
    ("source_without_type", [("    type: coco\n", "")],
     ["r.yaml:5:3: sources.coco: missing required key 'type'"]),
    ("source_typo_param", [("captions:", "captoins:")],
     ["r.yaml:5:3: sources.coco: needs one of the keys 'captions', 'instances'",
      "r.yaml:8:5: sources.coco.captoins: unknown key 'captoins'; did you mean 'captions'?"]),
    ("sources_not_mapping", [("  coco:\n    type: coco", "  - coco:\n    type: coco")], None),
    ("bad_source_name", [("  coco:\n", "  'co co':\n"), ("source: coco", "source: 'co co'")],
     ["r.yaml:5:3: sources.co co: invalid name 'co co'"]),
    ("missing_caption_file", [("captions_demo.json", "nope.json")], None),
    ("missing_images_dir", [("/images", "/imgs")], None),
    ("unknown_task_kind", [("kind: template", "kind: templat")],
     ["r.yaml:14:11: tasks.cap.kind: unknown task kind 'templat'; did you mean 'template'?"]),
    ("task_missing_source", [("    source: coco\n", "")],
     ["r.yaml:13:3: tasks.cap: missing required key 'source'"]),
    ("dangling_source", [("source: coco", "source: cocoa")],
     ["r.yaml:15:13: tasks.cap.source: source 'cocoa' is not defined in 'sources'; did you mean 'coco'?"]),
    ("dangling_pool", [("{pool: brief}", "{pool: brif}")],
     ["r.yaml:16:25: tasks.cap.instruction.pool: pool 'brif' is not defined in 'pools'; did you mean 'brief'?"]),
    ("task_unknown_param", [("per: caption", "per: caption\n    temprature: 1")],
     ["r.yaml:19:5: tasks.cap.temprature: unknown key 'temprature'"]),
    ("task_bad_enum", [("per: caption", "per: captions")],
     ["r.yaml:18:10: tasks.cap.per: unknown value 'captions'; did you mean 'caption'?"]),
    ("task_response_empty", [('response: "{{ caption }}"', 'response: ""')],
     ["r.yaml:17:15: tasks.cap.response: '' should be non-empty"]),
    ("unknown_filter", [("type: min_words", "type: min_word")],
     ["r.yaml:20:12: filters[0].type: unknown filter type 'min_word'; did you mean 'min_words' or 'words'?"]),
    ("filter_bad_threshold", [("min: 1}", "min: -1}")],
     ["r.yaml:20:28: filters[0].min: -1 is less than the minimum of 0"]),
    ("filter_unknown_param", [("min: 1}", "min: 1, mni: 3}")],
     ["r.yaml:20:31: filters[0].mni: unknown key 'mni'; did you mean 'min'?"]),
    ("filter_scope_unknown_task", [("min: 1}", "min: 1, tasks: [capp]}")],
     ["r.yaml:20:39: filters[0].tasks[0]: task 'capp' is not defined in 'tasks'"]),
    ("duplicate_filter_names", [("min: 1}", "min: 1}\n  - {type: min_words, min: 2}")],
     ["r.yaml:21:5: filters[1]: duplicate filter name 'min_words' (also at filters[0])"]),
    ("filters_not_list", [("  - {type: min_words, min: 1}", "  min_words: {min: 1}")],
     ["r.yaml:20:3: filters: {'min_words': {'min': 1}} is not of type 'array'"]),
    ("no_outputs", [("outputs:\n  - {format: llava, path: train.json}\n", "")],
     ["r.yaml:1:1: missing required key 'outputs'"]),
    ("empty_outputs", [("  - {format: llava, path: train.json}\n", ""), ("outputs:", "outputs: []")],
     ["r.yaml:21:10: outputs: [] should be non-empty"]),
    ("unknown_format", [("format: llava", "format: lava")],
     ["r.yaml:22:14: outputs[0].format: unknown exporter format 'lava'; did you mean 'llava'?"]),
    ("duplicate_output_path", [("path: train.json}", "path: train.json}\n  - {format: llava, path: train.json}")],
     ["r.yaml:23:5: outputs[1]: duplicate output path 'train.json' (also at outputs[0])"]),
    ("budget_negative", [("seed: 1", "seed: 1\nbudget: {max_usd: -5}")],
     ["r.yaml:4:19: budget.max_usd: -5 is less than or equal to the minimum of 0"]),
    ("budget_unknown_key", [("seed: 1", "seed: 1\nbudget: {usd: 5}")],
     ["r.yaml:4:10: budget.usd: unknown key 'usd'; did you mean 'max_usd'?"]),
    ("balance_unknown_task", [("seed: 1", "seed: 1\nbalance: {total: 10, mix: {caps: 1.0}}")],
     ["r.yaml:4:28: balance.mix.caps: task 'caps' is not defined in 'tasks'; did you mean 'cap'?"]),
    ("dangling_generator", [("pools:\n  brief:\n    templates: [\"Describe the image.\"]",
                             "pools:\n  brief:\n    templates: [\"Describe the image.\"]\n"
                             "  more:\n    type: expand\n    seeds: {pool: brief}\n    generator: gpt\n    n: 3")],
     ["r.yaml:15:16: pools.more.generator: generator 'gpt' is not defined in 'generators'"]),
    ("pool_cycle", [("pools:\n  brief:\n    templates: [\"Describe the image.\"]",
                     "pools:\n  brief:\n    templates: [\"Describe the image.\"]\n"
                     "  a:\n    type: expand\n    seeds: {pool: b}\n    generator: g\n    n: 3\n"
                     "  b:\n    type: expand\n    seeds: {pool: a}\n    generator: g\n    n: 3\n"
                     "generators:\n  g: {provider: mock, model: m}")],
     ["r.yaml:13:5: pools.a: dependency cycle: pool:a -> pool:b -> pool:a"]),
    ("template_undefined_variable", [('response: "{{ caption }}"', 'response: "{{ captoin }}"')],
     ["r.yaml:17:15: task 'cap' response: template '{{ captoin }}': undefined variable 'captoin'"]),
    ("pool_template_undefined_variable", [('["Describe the image."]', '["Describe {{ thing }}."]')],
     ["r.yaml:11:17: task 'cap' instruction: template 'Describe {{ thing }}.': undefined variable 'thing'"]),
    ("template_syntax_error", [('response: "{{ caption }}"', 'response: "{{ caption }"')],
     None),
    ("several_at_once", [("seed: 1", "seed: -1"), ("min: 1}", "min: -1}")],
     ["r.yaml:3:7: seed: -1 is less than the minimum of 0",
      "r.yaml:20:28: filters[0].min: -1 is less than the minimum of 0"]),
]


def _write(tmp_path: Path, case: str, edits: list[tuple[str, str]]) -> Path:
    text = base_text()
    if case == "not_mapping":
        text = "- just\n- a list\n"
    for old, new in edits:
        if old:
            assert old in text, f"test setup: {old!r} not in base recipe"
            text = text.replace(old, new, 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case,edits,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_recipe_gives_located_message(tmp_path, monkeypatch, case, edits, expected):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, case, edits)
    with pytest.raises(RecipeError) as info:
        load_recipe("r.yaml")
    got = [p.format().splitlines()[0] for p in info.value.problems]
    if expected is None:
        expected = EXPECTED_DYNAMIC[case](path)
    assert got == expected


EXPECTED_DYNAMIC = {
    "template_syntax_error": lambda p: [
        "r.yaml:17:15: task 'cap' response: template '{{ caption }': syntax error: unexpected '}'"],
    "not_mapping": lambda p: ["r.yaml:1:1: a recipe is a mapping of keys (vlitc, name, sources, ...)"],
    "sources_not_mapping": lambda p: [
        f"r.yaml:5:3: sources: [{{'coco': None, 'type': 'coco', 'images': '{DEMO / 'images'}', "
        f"'captions': '{DEMO / 'annotations' / 'captions_demo.json'}'}}] is not of type 'object'"],
    "missing_caption_file": lambda p: [
        f"r.yaml:8:15: sources.coco.captions: file not found: {DEMO / 'annotations' / 'nope.json'}"],
    "missing_images_dir": lambda p: [
        f"r.yaml:7:13: sources.coco.images: image folder not found: {DEMO / 'imgs'}"],
}


def test_base_recipe_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(_write(tmp_path, "ok", []))
    assert recipe.name == "t"


def test_errors_carry_excerpt_and_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "x", [("type: min_words", "type: min_word")])
    with pytest.raises(RecipeError) as info:
        load_recipe("r.yaml")
    text = info.value.problems[0].format()
    assert "   20 |   - {type: min_word, min: 1}" in text
    assert "hint: choose one of:" in text and "min_words" in text


def test_at_least_thirty_malformed_recipes_are_covered():
    assert len(CASES) >= 30
