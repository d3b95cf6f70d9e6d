"""``vlitc lint`` finds each planted defect in a test pool, located as file:line."""

from __future__ import annotations

from pathlib import Path

from vlitc.cli.commands import lint as lint_cmd
from vlitc.lint import Expect, lint_file, lint_paths, lint_templates

PLANTED = """\
# planted defects, one per line from line 2
Describe the image briefly.
describe the image briefly
Describe the images briefly!
Describe the image.Summarize the picture in one sentence.
Answer the question briefly.What is shown here?
{{ question }} Use {{ qestion }} to answer.
Look at the picture and reply.
{# only a comment #}
Describe {{ caption
Offer a concise account of {{ question }}.
"""


def findings_by_line(path: Path, expect: Expect) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for f in lint_file(path, expect):
        assert f.file == str(path)
        out.setdefault(f.line, []).append(f.message)
    return out


def test_every_planted_defect_is_found_on_its_line(tmp_path):
    p = tmp_path / "pool.txt"
    p.write_text(PLANTED)
    got = findings_by_line(p, Expect(frozenset({"question", "answer"}), (frozenset({"question"}),)))
    assert any("duplicate template (same as line 2)" in m for m in got[3])
    assert any("near-duplicate template" in m and "line 2" in m for m in got[4])
    assert any("two sentences run together at 'image.Summarize'" in m for m in got[5])
    assert any("two sentences run together" in m for m in got[6])
    assert any("undefined variable 'qestion' (did you mean 'question'?)" in m for m in got[7])
    assert any("unused variable: the template never reads {{ question }}" in m for m in got[8])
    assert got[9] == ["empty template"]
    assert any("syntax error" in m for m in got[10])
    assert 11 not in got


def test_empty_item_in_a_yaml_pool(tmp_path):
    p = tmp_path / "pool.yaml"
    p.write_text('- "Describe the image."\n- ""\n- "   "\n')
    assert [str(f) for f in lint_file(p, Expect())] == [f"{p}:2: empty template", f"{p}:3: empty template"]


def test_python_list_missing_comma_is_caught():
    # ["Describe the image briefly." "What is in it?"] is one template in Python
    found = lint_templates([("Describe the image briefly." "What is in it?", 1)], "x.py")
    assert [f.message.split(" (")[0] for f in found] == ["two sentences run together at 'briefly.What'"]


def test_abbreviations_and_decimals_are_not_run_together():
    assert lint_templates([("Give the box as [0.25, 0.5] e.g. like this.", 1),
                           ("The U.S. flag.", 2)], "x") == []


def test_default_pool_file_is_checked_against_its_task_kind(tmp_path):
    p = tmp_path / "vqa_short.txt"
    p.write_text("Answer this: {{ question }}\nWhat is shown?\nReply to {{ caption }}.\n")
    msgs = [str(f) for f in lint_file(p)]
    assert msgs == [
        f"{p}:2: unused variable: the template never reads {{{{ question }}}}: 'What is shown?'",
        f"{p}:3: undefined variable 'caption' (did you mean 'captions'?) in 'Reply to {{{{ caption }}}}.'",
        f"{p}:3: unused variable: the template never reads {{{{ question }}}}: 'Reply to {{{{ caption }}}}.'",
    ]


def test_recipe_pools_and_inline_templates_are_checked_against_the_tasks_using_them(tmp_path):
    (tmp_path / "brief.txt").write_text("Describe the image.\nDescribe the image.\n")
    r = tmp_path / "r.yaml"
    r.write_text(
        "vlitc: 1\nname: x\n"
        "pools:\n  brief: {file: brief.txt}\n  q:\n    templates:\n      - '{{ question }}'\n      - 'Look.Answer {{ answr }}'\n"
        "tasks:\n"
        "  cap: {kind: brief_caption, source: s, instruction: {pool: brief}}\n"
        "  vqa: {kind: vqa, source: s, instruction: {pool: q}}\n"
        "  c2:\n    kind: counting\n    source: s\n    instruction:\n      templates: ['How many?']\n"
    )
    got = [str(f) for f in lint_paths([r])]
    assert f"{tmp_path / 'brief.txt'}:2: duplicate template (same as line 1): 'Describe the image.'" in got
    assert any(g.startswith(f"{r}:8: two sentences run together") for g in got)
    assert any(g.startswith(f"{r}:8: undefined variable 'answr'") for g in got)
    assert any(g.startswith(f"{r}:8: unused variable") for g in got)
    assert any(g.startswith(f"{r}:16: unused variable: the template never reads {{{{ category }}}} or {{{{ plural }}}}") for g in got)


def test_cli_exits_2_on_findings_and_0_when_clean(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("Describe it.\nDescribe it.\n")
    assert lint_cmd.run(_args([str(bad)])) == 2
    assert f"{bad}:2: duplicate template" in capsys.readouterr().out
    good = tmp_path / "good.txt"
    good.write_text("Describe it.\nWhat do you see in this picture?\n")
    assert lint_cmd.run(_args([str(good)])) == 0


def test_shipped_default_pools_are_clean():
    assert lint_cmd.run(_args([])) == 0


def _args(paths):
    import argparse

    return argparse.Namespace(paths=paths)


def test_lint_checks_context_templates_and_loads_recipes_bounded(tmp_path, capsys):
    from vlitc.cli.main import main

    (tmp_path / "ctx.j2").write_text("{{ captions }}\n{{ record.__class__ }}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("vlitc: 1\nname: t\ntasks:\n  g: {kind: generate, source: s, generator: m, "
                      "prompt: llava/conversation, context: ctx.j2}\n")
    rc = main(["lint", str(recipe)])
    out = capsys.readouterr()
    assert rc == 2 and f"{tmp_path / 'ctx.j2'}:2: template not allowed in a template" in out.out + out.err
    recipe.write_text("vlitc: 1\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["lint", str(recipe)]) == 2
    assert "nested more than 64 levels" in capsys.readouterr().err
