"""The report's LLM section (generator, pack, temperature, n, requests, tokens, cost, repairs,
parse failures with their text), its per-task funnel and drop reasons, the context beside each
generated sample, and stats as tables; the same bytes when a rebuild reads the cache."""

from __future__ import annotations

import html

import yaml
from _release_util import demo_recipe_data

from vlitc.api import build

# odd choices never parse, even on repair; even ones parse at once
TEMPLATE = ("{% if index % 2 or 'could not be read' in last_user %}Sorry, I cannot do that "
            "#{{ index }}.{% else %}"
            "Question:\nWhat is shown?\n===\nAnswer:\nShapes on a plain background.{% endif %}")


def _recipe(tmp_path, repo_root):
    r = demo_recipe_data(repo_root)
    r["sources"] = {"coco": {**r["sources"]["coco"], "sample": 3}}
    r["generators"] = {"llm": {"provider": "mock", "model": "mock", "template": TEMPLATE,
                               "prices": {"input": 2.0, "output": 8.0}}}
    r["tasks"] = {"conv": {"kind": "generate", "source": "coco", "generator": "llm",
                           "prompt": "llava/conversation", "n": 2, "repair": True,
                           "temperature": 0.7}}
    r.pop("balance", None)
    r["filters"] = [{"type": "structure"}]
    r["report"] = {"type": "release", "indicators": {"response": False}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


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
