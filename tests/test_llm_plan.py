"""What ``vlitc plan`` says a build will cost before anything runs, against what the build then
accounts on a loopback server that ignores ``n`` (as llama.cpp's does), and the seed of the
calls that make up for the choices such a server does not return."""

from __future__ import annotations

import json

import pytest

from tests._llm_util import demo_recipe
from vlitc import api
from vlitc.llm.estimate import calls_per_sample, estimate_votes, totals
from vlitc.llm.fakeserver import FakeServer

PRICES = {"input": 1.0, "output": 2.0}


@pytest.fixture(scope="module")
def one_choice():
    """A server that answers one choice per call whatever ``n`` asks, its text set by the seed."""
    return FakeServer(max_choices=1, keep_bodies=True).start_in_thread()


def _plan(recipe, cache):
    rec, plan, rows = api.plan_status(recipe, cache)
    return rows, api.estimates(rec, plan, rows)


def test_plan_counts_source_records_before_anything_is_built(tmp_path, monkeypatch, one_choice):
    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe("llava-instruct", tmp_path, one_choice.base_url, sample=4, prices=PRICES)
    rows, est = _plan(recipe, tmp_path / "cache")
    assert all(r["status"] == "new" for r in rows)
    for sid in ("task:conversation", "task:detail", "task:complex"):
        assert est[sid]["calls"] == 4 and not est[sid]["per_item"]  # 4 sampled images, n = 1
    build = est["totals"]["build"]
    assert build["calls"] == 12 and build["per_item"] == []
    assert est["totals"]["generators"]["llm"]["calls"] == 12
    assert build["usd"] == pytest.approx(sum(est[s]["usd"] for s in build["steps"]), abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llava-instruct", "review-paper"])
def test_plan_matches_the_accounted_calls_and_prompt_tokens(tmp_path, monkeypatch, one_choice, name):
    """review-paper asks n=5 of a server that returns one choice: the plan counts five calls per
    item, as the build makes; prompt tokens agree within 5%. (The loopback answers are one line
    long, so completion tokens are compared only against the plan's cap.)"""
    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe(name, tmp_path, one_choice.base_url, sample=3, prices=PRICES)
    _rows, est = _plan(recipe, tmp_path / "cache")
    planned = est["totals"]["build"]
    before = len(one_choice.log)
    built = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    spent = built.manifest["llm"]["total"]
    assert planned["calls"] == spent["calls"] == len(one_choice.log) - before
    assert planned["prompt_tokens"] == pytest.approx(spent["prompt_tokens"], rel=0.05)
    assert spent["completion_tokens"] <= planned["completion_tokens"]
    _rows, again = _plan(recipe, tmp_path / "cache")
    assert "totals" not in again  # everything is cached: nothing left to pay for


@pytest.mark.slow
def test_calls_for_missing_choices_vary_the_seed(tmp_path, monkeypatch, one_choice):
    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe("review-paper", tmp_path, one_choice.base_url, sample=2, seed=11)
    before = len(one_choice.log)
    api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    calls = one_choice.log[before:]
    seeds: dict[str, list[int]] = {}
    texts: dict[str, set[str]] = {}
    for e in calls:
        prompt = json.dumps(e["body"]["messages"])
        seeds.setdefault(prompt, []).append(e["body"]["seed"])
        texts.setdefault(prompt, set()).add(e["answer"]["choices"][0]["message"]["content"])
    assert seeds and all(sorted(s) == [11, 12, 13, 14, 15] for s in seeds.values())
    assert all(len(t) == 5 for t in texts.values())  # five calls, five texts: none paid twice


def test_servers_without_n_count_n_calls_per_item():
    assert not calls_per_sample({"provider": "openai", "model": "gpt-4o-mini"})
    assert not calls_per_sample({"provider": "openai", "base_url": "https://api.openai.com/v1"})
    assert calls_per_sample({"provider": "openai", "base_url": "http://127.0.0.1:8080/v1"})
    assert not calls_per_sample({"provider": "openai", "base_url": "http://vllm:8000/v1",
                                 "supports_n": True})
    assert calls_per_sample({"provider": "anthropic"}) and calls_per_sample({"provider": "mock"})


def test_judge_votes_are_counted_per_sample_and_summed_per_generator():
    gen = {"provider": "anthropic", "model": "claude-3-5-haiku"}
    judge = estimate_votes(3, gen, 40)
    assert judge["calls"] == 120 and judge["completion_tokens"] > 0 and judge["usd"] > 0
    assert estimate_votes(3, {"provider": "openai", "model": "gpt-4o-mini"}, 40)["calls"] == 40
    per = estimate_votes(3, gen, -1)
    sums = totals({"measure:judge": judge, "measure:other": per},
                  {"measure:judge": "claude", "measure:other": "claude"})
    assert sums["build"]["calls"] == 120 and sums["build"]["per_item"] == ["measure:other"]
    assert sums["generators"]["claude"]["steps"] == ["measure:judge"]


def test_plan_json_carries_the_totals(tmp_path, monkeypatch, one_choice, capsys):
    from vlitc.cli.main import main

    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe("llava-instruct", tmp_path, one_choice.base_url, sample=2, prices=PRICES)
    assert main(["plan", str(recipe), "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["build"]["calls"] == 6
    assert main(["plan", str(recipe), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "whole build" in capsys.readouterr().out
