"""The ``list`` pool: templates from text, YAML and JSON files or inline, with located errors."""

from __future__ import annotations

import pytest
from _tasks_util import ctx

from vlitc.errors import InputError
from vlitc.ops.pools import builtin_pool_path, read_pool_file
from vlitc.ops.registry import get


def pool(**params):
    return get("pool", "list")(params, "p")


@pytest.mark.exercises("pool.list")
def test_text_file_skips_blank_lines_and_comments(tmp_path):
    (tmp_path / "p.txt").write_text("# brief captions\n\nDescribe the image.\n  Summarize it.  \n")
    assert pool(file="p.txt").templates(ctx(tmp_path)) == ["Describe the image.", "Summarize it."]


def test_text_file_backslash_n_is_a_line_break(tmp_path):
    (tmp_path / "p.txt").write_text("{{ question }}\\n{{ options }}\n")
    assert pool(file="p.txt").templates(ctx(tmp_path)) == ["{{ question }}\n{{ options }}"]


def test_yaml_and_json_lists_keep_their_lines(tmp_path):
    (tmp_path / "p.yaml").write_text("# pool\n- Describe the image.\n- 'Summarize it: {{ id }}'\n")
    (tmp_path / "p.json").write_text('[\n "A",\n "B c"\n]\n')
    assert read_pool_file(tmp_path / "p.yaml") == [("Describe the image.", 2),
                                                   ("Summarize it: {{ id }}", 3)]
    assert pool(file="p.json").templates(ctx(tmp_path)) == ["A", "B c"]


def test_inline_templates():
    assert pool(templates=["Describe it."]).templates(ctx()) == ["Describe it."]


def test_missing_file_is_a_located_input_error(tmp_path):
    with pytest.raises(InputError, match="pool file not found") as e:
        pool(file="nope.txt").templates(ctx(tmp_path))
    assert str(tmp_path / "nope.txt") in str(e.value)


def test_yaml_mapping_is_rejected_with_its_line(tmp_path):
    (tmp_path / "p.yaml").write_text("\nbrief: Describe the image.\n")
    with pytest.raises(InputError, match=r"p.yaml:2:1: pool file must hold a list"):
        pool(file="p.yaml").templates(ctx(tmp_path))


def test_non_string_item_is_located(tmp_path):
    (tmp_path / "p.yaml").write_text("- ok template\n- {a: 1}\n")
    with pytest.raises(InputError, match=r"p.yaml:2:3: every pool item must be a string"):
        pool(file="p.yaml").templates(ctx(tmp_path))


def test_file_of_only_comments_is_an_error(tmp_path):
    (tmp_path / "p.txt").write_text("# nothing yet\n\n")
    with pytest.raises(InputError, match="holds no templates"):
        pool(file="p.txt").templates(ctx(tmp_path))


def test_file_param_is_part_of_the_step_key(tmp_path):
    p = pool(file="p.txt")
    assert p.files(ctx(tmp_path)) == [tmp_path / "p.txt"]


def test_schema_needs_exactly_one_of_file_or_templates():
    import jsonschema

    schema = get("pool", "list").params_schema
    jsonschema.validate({"file": "a.txt"}, schema)
    for bad in ({}, {"file": "a", "templates": ["x"]}, {"templates": []}, {"fiel": "a"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_builtin_pools_exist_and_are_not_empty():
    for name in ("brief_caption", "detailed_caption", "vqa_short", "vqa_multiple_choice"):
        assert len(read_pool_file(builtin_pool_path(name))) >= 8
