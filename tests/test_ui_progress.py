"""Build progress: per-step LLM figures, parse failures and repairs, step k of N and an ETA,
as live bars on a terminal and as plain lines in a log."""

from __future__ import annotations

import io
import re

import yaml
from _release_util import demo_recipe_data

from vlitc.api import build
from vlitc.ui.progress import PlainReporter, RichReporter, StepState, progress_line, reporter_for

# every other sample answers in the wrong format first, and correctly when asked to repair
REPAIRABLE = ("{% if 'could not be read' in last_user %}Question:\nHow many?\n===\nAnswer:\nTwo."
              "{% elif index % 2 %}No blocks here.{% else %}Question:\nWhat?\n===\nAnswer:\nA.{% endif %}")


def _recipe(tmp_path, repo_root):
    r = demo_recipe_data(repo_root)
    r["sources"] = {"coco": {**r["sources"]["coco"], "sample": 4}}
    r["generators"] = {"llm": {"provider": "mock", "model": "mock", "template": REPAIRABLE,
                               "prices": {"input": 1.0, "output": 2.0}}}
    r["tasks"] = {"conv": {"kind": "generate", "source": "coco", "generator": "llm",
                           "prompt": "llava/conversation", "n": 2, "repair": True}}
    r.pop("balance", None)
    r["report"] = False
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def test_plain_lines_carry_the_steps_own_llm_figures_and_repairs(tmp_path, repo_root):
    out = io.StringIO()
    result = build(_recipe(tmp_path, repo_root), out_dir=tmp_path / "o",
                   cache_dir=tmp_path / "c", emit=PlainReporter(out, every=0.0))
    text = out.getvalue()
    steps = result.manifest["steps"]
    conv = next(s for s in steps if s["id"] == "task:conv")
    llm = result.manifest["llm"]["steps"]["task:conv"]
    index = [s["id"] for s in steps].index("task:conv") + 1
    progress = [line for line in text.splitlines() if line.startswith(f"step {index} of ")]
    assert progress, text
    assert f"step {index} of {len(steps)} task:conv: " in progress[-1]
    # the step's own calls and tokens (not the build's), with the parse failures and repairs
    done = next(line for line in text.splitlines() if line.strip().startswith("ran task:conv"))
    tokens = llm["prompt_tokens"] + llm["completion_tokens"]
    assert f"{llm['calls']} calls, {tokens:,} tok, ${llm['usd']:.4f}" in done
    assert f"{conv['counters']['repair_requests']} repairs asked" in done
    assert f"{conv['counters']['repaired']} repaired" in done
    assert conv["counters"]["repaired"] > 0


def test_plain_reporter_prints_progress_every_few_seconds_not_on_every_event():
    out = io.StringIO()
    rep = PlainReporter(out, every=3600.0)
    rep({"event": "step_start", "step": "task:t", "index": 2, "of": 5})
    for i in range(50):
        rep({"event": "progress", "step": "task:t", "done": i, "total": 50})
    assert out.getvalue() == ""  # nothing in between: the next line waits for the interval
    rep({"event": "step", "step": "task:t", "status": "ran", "n_in": 50, "n_out": 50, "seconds": 1.0})
    assert out.getvalue().strip() == "ran task:t  50 in, 50 out 1.00s"


def test_eta_follows_the_pace_so_far():
    st = StepState({"step": "task:t", "index": 1, "of": 3})
    st.started -= 10.0  # ten seconds in
    st.update({"event": "llm", "done": 25, "total": 100,
               "step_llm": {"calls": 25, "prompt_tokens": 1000, "completion_tokens": 500,
                            "usd": 0.5, "retries": 2, "failed": 1}})
    assert 29.0 < st.eta() < 31.5
    line = progress_line(st)
    assert line.startswith("step 1 of 3 task:t: 25/100, 25 calls, 1,500 tok, $0.5000, "
                           "2 retries, 1 failed, ETA 0:00:3")


def test_a_terminal_gets_the_live_display_and_a_pipe_the_plain_lines():
    from rich.console import Console

    piped = reporter_for(Console(file=io.StringIO()))
    assert isinstance(piped, PlainReporter)
    tty = reporter_for(Console(file=io.StringIO(), force_terminal=True, width=200))
    assert isinstance(tty, RichReporter)
    tty({"event": "step_start", "step": "task:t", "index": 1, "of": 1})
    tty({"event": "llm", "step": "task:t", "done": 1, "total": 2, "step_llm": {"calls": 1}})
    tty({"event": "step", "step": "task:t", "status": "ran", "n_in": 2, "n_out": 2, "seconds": 0.1})
    tty.close()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.console.file.getvalue())
    assert "ran task:t  2 in, 2 out 0.10s [1 calls, 0 tok, $0.0000]" in shown
