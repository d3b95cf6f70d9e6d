"""The report's LLM section (generator, pack, temperature, n, requests, tokens, cost, repairs,
parse failures with their text), its per-task funnel and drop reasons, the context beside each
generated sample, and stats as tables; the same bytes when a rebuild reads the cache."""

from __future__ import annotations

import html

import yaml
from _release_util import one_task_recipe

from vlitc.api import build

# odd choices never parse, even on repair; even ones parse at once
TEMPLATE = ("{% if index % 2 or 'could not be read' in last_user %}Sorry, I cannot do that "
            "#{{ index }}.{% else %}"
            "Question:\nWhat is shown?\n===\nAnswer:\nShapes on a plain background.{% endif %}")


def _recipe(tmp_path, repo_root):
    return one_task_recipe(
        tmp_path, repo_root,
        {"provider": "mock", "model": "mock", "template": TEMPLATE,
         "prices": {"input": 2.0, "output": 8.0}},
        {"conv": {"kind": "generate", "source": "coco", "generator": "llm",
                  "prompt": "llava/conversation", "n": 2, "repair": True, "temperature": 0.7}})


def test_report_shows_what_the_generator_did_and_what_it_cost(tmp_path, repo_root):
    recipe = _recipe(tmp_path, repo_root)
    result = build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    page = (tmp_path / "out" / "report.html").read_text()
    conv = next(s for s in result.manifest["steps"] if s["id"] == "task:conv")["counters"]
    # 3 requests of 2 choices each, and 3 repair requests for the unreadable choices, in vain
    assert conv["llm_requests"] == 6 and conv["repair_requests"] == 3
    assert conv["parse_error"] == 3 and "repaired" not in conv
    assert "<h2>LLM generation</h2>" in page
    tokens_p, tokens_c = conv["prompt_tokens"], conv["completion_tokens"]
    usd = (tokens_p * 2.0 + tokens_c * 8.0) / 1e6
    row = (f"<td>conv</td><td>llm</td><td>mock / mock</td><td>llava/conversation</td>"
           f"<td>0.7</td><td>2</td><td>6</td><td>{tokens_p:,}</td><td>0 / 0</td>"
           f"<td>{tokens_c:,}</td><td>${usd:.4f}</td><td>$0.0000</td><td>0 of 3</td><td>3</td>"
           "<td>0</td>")
    assert row in page
    # each parse failure with the parser's reason and the raw text
    assert page.count('<div class="failure">') == 3
    assert html.escape("Sorry, I cannot do that #1.") in page
    # per task: made, dropped by each filter, released; and the reasons
    assert "<h2>Per-task funnel</h2>" in page
    assert "<td>conv</td><td>6</td><td>3</td><td>0</td><td>3</td>" in page
    assert "<th>dropped by structure</th>" in page
    # the context beside a generated sample, and stats as a table, not JSON
    assert "context the generator saw" in page
    assert '<table class="stats">' in page and "<pre>{" not in page


def test_a_rebuild_from_the_cache_reports_the_same_bytes(tmp_path, repo_root):
    recipe = _recipe(tmp_path, repo_root)
    build(recipe, out_dir=tmp_path / "a", cache_dir=tmp_path / "cache")
    first = (tmp_path / "a" / "report.html").read_bytes()
    # a fresh step cache, the same LLM responses: every request is a cache hit this time
    import shutil

    shutil.copytree(tmp_path / "cache" / "llm", tmp_path / "cache2" / "llm")
    build(recipe, out_dir=tmp_path / "b", cache_dir=tmp_path / "cache2")
    assert (tmp_path / "b" / "report.html").read_bytes() == first


def test_judge_and_complexity_votes_are_in_the_llm_section_and_a_rerun_reports_the_same(
        tmp_path, repo_root):
    """The judge's and the complexity filter's requests, tokens and cost have rows of their
    own; a judge measure run again with every sample served by the per-item cache counts the
    same usage (carried in its stats), so the report's bytes do not change."""
    r = yaml.safe_load(_recipe(tmp_path, repo_root).read_text())
    r["generators"]["rater"] = {"provider": "mock", "model": "mock-judge",
                                "template": "Looks right.\nVERDICT: correct\nSCORE: 6",
                                "prices": {"input": 1.0, "output": 4.0}}
    r["tasks"]["conv"]["repair"] = False
    r["filters"] = [{"type": "structure"},
                    {"type": "judge", "generator": "rater", "votes": 2, "tie": "keep"},
                    {"type": "complexity", "generator": "rater"}]
    recipe = tmp_path / "j.yaml"
    recipe.write_text(yaml.safe_dump(r, sort_keys=False))
    result = build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    steps = {s["id"]: s for s in result.manifest["steps"]}
    judged = steps["measure:judge"]
    c = judged["counters"]
    assert c["llm_requests"] == judged["n_in"] == 3  # one request of 2 votes per parsed sample
    page = (tmp_path / "out" / "report.html").read_text()
    usd = (c["prompt_tokens"] * 1.0 + c["completion_tokens"] * 4.0) / 1e6
    row = (f"<td>filter judge</td><td>rater</td><td>mock / mock-judge</td><td></td>"
           f"<td>0.7</td><td>2</td><td>3</td><td>{c['prompt_tokens']:,}</td><td>0 / 0</td>"
           f"<td>{c['completion_tokens']:,}</td><td>${usd:.4f}</td><td>$0.0000</td>"
           f"<td>0 of 0</td><td>0</td><td>0</td>")
    assert row in page
    assert "<td>filter complexity</td><td>rater</td>" in page
    assert steps["measure:complexity"]["counters"]["llm_requests"] == 3

    again = build(recipe, out_dir=tmp_path / "out2", cache_dir=tmp_path / "cache",
                  force=["measure:judge"])
    rerun = next(s for s in again.manifest["steps"] if s["id"] == "measure:judge")
    assert rerun["status"] == "ran" and rerun["counters"].get("measured", 0) == 0  # all cached
    assert rerun["counters"]["llm_requests"] == 3
    assert (tmp_path / "out2" / "report.html").read_bytes() == \
        (tmp_path / "out" / "report.html").read_bytes()
