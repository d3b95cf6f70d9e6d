"""The CLI: exit codes, located errors without tracebacks, JSON events, graph and schema."""

from __future__ import annotations

import json
import subprocess
import sys

from _core_util import demo_copy

from vlitc.cli.main import main


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vlitc.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_validate_ok(tmp_path, capsys):
    recipe = demo_copy(tmp_path)
    assert main(["validate", str(recipe)]) == 0
    assert "ok (demo 0.1.0" in capsys.readouterr().out


def test_bad_recipe_exits_2_with_located_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vlitc: 1\nname: x\nseed: -3\noutputs: []\n")
    proc = _run("validate", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:3:7: seed: -3 is less than the minimum of 0" in proc.stderr
    assert "Traceback" not in proc.stderr and "2 problems found" in proc.stderr


def test_missing_recipe_file_exits_2(tmp_path):
    proc = _run("build", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "recipe file not found" in proc.stderr


def test_build_json_prints_one_event_per_line(tmp_path):
    recipe = demo_copy(tmp_path)
    proc = _run("build", str(recipe), "--json", "--out", str(tmp_path / "o"),
                "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(e["status"] == "ran" for e in steps)
    assert events[-1]["event"] == "done" and events[-1]["cached"] == 0
    again = _run("build", str(recipe), "--json", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "c"))
    assert json.loads(again.stdout.splitlines()[-1])["ran"] == 0


def test_graph_draws_mermaid_and_dot(tmp_path, capsys):
    recipe = demo_copy(tmp_path)
    assert main(["graph", str(recipe), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR") and "n_source_coco --> n_task_brief_caption" in out
    assert main(["graph", str(recipe), "--format", "dot", "--cache-dir", str(tmp_path / "c")]) == 0
    assert '"source:coco" -> "task:object_box";' in capsys.readouterr().out


def test_plan_json_lists_new_steps(tmp_path, capsys):
    recipe = demo_copy(tmp_path)
    assert main(["plan", str(recipe), "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    rows = json.loads(capsys.readouterr().out)["steps"]
    assert rows[0]["status"] == "new" and rows[0]["reasons"] == ["new"]


def test_schema_command_matches_the_shipped_schema_file(capsys, repo_root):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    shipped = json.loads((repo_root / "schemas" / "recipe.schema.json").read_text())
    assert printed == shipped, "run `vlitc schema > schemas/recipe.schema.json`"


def test_cache_gc_keeps_what_the_last_build_uses(tmp_path, capsys):
    recipe = demo_copy(tmp_path)
    out, cache = str(tmp_path / "o"), str(tmp_path / "c")
    assert main(["build", str(recipe), "--quiet", "--out", out, "--cache-dir", cache]) == 0
    recipe.write_text(recipe.read_text().replace("Give a short caption", "Give a brief caption"))
    assert main(["build", str(recipe), "--quiet", "--out", out, "--cache-dir", cache]) == 0
    capsys.readouterr()
    assert main(["cache", "gc", "--cache-dir", cache]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["plan", str(recipe), "--json", "--cache-dir", cache]) == 0
    rows = json.loads(capsys.readouterr().out)["steps"]
    assert all(r["status"] == "cached" for r in rows)


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path):
    """``vlitc plan --json | head``: the reader is gone before the output is written."""
    import os

    recipe = demo_copy(tmp_path)
    for args in (["plan", str(recipe), "--json", "--cache-dir", str(tmp_path / "c")],
                 ["schema"], ["ops", "--markdown"]):
        read, write = os.pipe()
        os.close(read)
        try:
            proc = subprocess.run([sys.executable, "-m", "vlitc.cli.main", *args], stdout=write,
                                  stderr=subprocess.PIPE, text=True)
        finally:
            os.close(write)
        assert proc.returncode == 141, proc.stderr
        assert proc.stderr == "", args


def test_a_command_loads_only_its_own_module_and_help_lists_them_all(tmp_path):
    """``vlitc build`` imports the build command alone (a no-op build answers before the rest
    load); no command, an option first or a name that is no command get every command."""
    from vlitc.cli.main import build_parser

    def commands(parser) -> list[str]:
        return sorted(parser._subparsers._group_actions[0].choices)

    every = commands(build_parser())
    assert {"build", "plan", "validate", "cache"} <= set(every)
    assert commands(build_parser("build")) == ["build"]
    assert commands(build_parser("nope")) == every
    recipe = demo_copy(tmp_path)
    args = ["build", str(recipe), "--quiet", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    assert _run(*args).returncode == 0
    code = ("import sys; from vlitc.cli.main import main\n"
            f"assert main({args!r}) == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith('vlitc.cli.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "['vlitc.cli.commands.build']", out.stderr  # the no-op rebuild
    listed = subprocess.run([sys.executable, "-m", "vlitc.cli.main", "--help"], capture_output=True, text=True)
    assert all(name in listed.stdout for name in every)
