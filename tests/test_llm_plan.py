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


@pytest.fixture(scope="module")
def imitating():
    """The same, writing answers as long as the in-context examples each request shows (as a
    model imitating its examples does), so that completion tokens can be compared too."""
    return FakeServer(max_choices=1, answer_chars="examples").start_in_thread()


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
def test_plan_matches_the_accounted_calls_and_tokens(tmp_path, monkeypatch, imitating, name):
    """review-paper asks n=5 of a server that returns one choice: the plan counts five calls per
    item, as the build makes; prompt tokens agree within 5%, and so do completion tokens when
    the model writes as long as the examples it is shown (the plan's assumption: the mean
    example answer of the pack, capped by max_tokens)."""
    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe(name, tmp_path, imitating.base_url, sample=3, prices=PRICES)
    _rows, est = _plan(recipe, tmp_path / "cache")
    planned = est["totals"]["build"]
    before = len(imitating.log)
    built = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    spent = built.manifest["llm"]["total"]
    assert planned["calls"] == spent["calls"] == len(imitating.log) - before
    assert planned["prompt_tokens"] == pytest.approx(spent["prompt_tokens"], rel=0.05)
    assert planned["completion_tokens"] == pytest.approx(spent["completion_tokens"], rel=0.05)
    assert planned["usd"] == pytest.approx(spent["usd"], rel=0.05)
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


def _task_output(cache, manifest, sid):
    from vlitc.run.store import Store

    store = Store(cache)
    try:
        key = next(s["key"] for s in manifest["steps"] if s["id"] == sid)
        return list(store.read(store.get_entry(key)["outputs"]["main"]))
    finally:
        store.close()


def test_plan_counts_the_items_an_edited_example_changes_and_the_calls_the_rebuild_sends(
        tmp_path, monkeypatch, one_choice, capsys):
    """Edit one in-context example of a generate step's pack: the plan says exactly the items
    whose requests drew it are changed and the rest cached (no request sent), and counts as
    many calls as the rebuild then sends; the other generating steps stay cached."""
    import shutil

    import yaml

    from vlitc.cli.main import main
    from vlitc.llm.context import TEMPLATES_ROOT

    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    shutil.copytree(TEMPLATES_ROOT / "llava" / "conversation", tmp_path / "packs" / "conv")
    recipe = demo_recipe("llava-instruct", tmp_path, one_choice.base_url, sample=8, prices=PRICES)
    data = yaml.safe_load(recipe.read_text())
    data["tasks"]["conversation"]["prompt"] = "packs/conv"
    data["report"] = {"type": "release", "indicators": {"response": False}}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    cache = tmp_path / "cache"
    first = api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache)
    made = _task_output(cache, first.manifest, "task:conversation")
    drew = {s["meta"]["record_id"] for s in made if 3 in s["meta"]["examples"]}
    assert 0 < len(drew) < 8  # some requests drew example 3, others did not

    example = tmp_path / "packs" / "conv" / "examples" / "003_response.txt"
    example.write_text(example.read_text() + "\nAnswer:\nIt is a sunny day.\n")
    sent = len(one_choice.log)
    rows, est = _plan(recipe, cache)
    assert len(one_choice.log) == sent  # planning sends nothing
    by = {r["id"]: r for r in rows}
    assert by["task:conversation"]["status"] == "stale"
    assert by["task:conversation"]["items"] == {"new": 0, "changed": len(drew),
                                                "cached": 8 - len(drew)}
    assert by["task:detail"]["status"] == by["task:complex"]["status"] == "cached"
    planned = est["task:conversation"]
    assert planned["calls"] == len(drew) and est["totals"]["build"]["calls"] == len(drew)

    again = api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache)
    spent = again.manifest["llm"]["total"]
    assert len(one_choice.log) - sent == spent["calls"] == planned["calls"]
    assert planned["prompt_tokens"] == pytest.approx(spent["prompt_tokens"], rel=0.05)
    remade = _task_output(cache, again.manifest, "task:conversation")
    changed = {s["meta"]["record_id"] for s, old in zip(remade, made, strict=True)
               if s["meta"]["requests"] != old["meta"]["requests"]}
    assert changed == drew

    example.write_text(example.read_text() + "A second edit.\n")
    assert main(["plan", str(recipe), "--json", "--cache-dir", str(cache)]) == 0
    out = json.loads(capsys.readouterr().out)
    row = next(r for r in out["steps"] if r["id"] == "task:conversation")
    assert row["items"]["changed"] == len(drew) and "requests_todo" not in row
    monkeypatch.setenv("COLUMNS", "300")  # one table row a line
    assert main(["plan", str(recipe), "--cache-dir", str(cache)]) == 0
    assert f"0 new, {len(drew)} changed, {8 - len(drew)} cached" in capsys.readouterr().out


def test_plan_of_a_judge_asked_for_one_more_vote_counts_only_the_new_votes(
        tmp_path, monkeypatch, one_choice):
    """A judge raised from 2 to 3 votes re-measures every sample (its measure params changed),
    but the response cache holds each sample's first two votes: the plan counts one call per
    sample, as the rebuild sends, not three."""
    import yaml

    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")
    recipe = demo_recipe("llava-instruct", tmp_path, one_choice.base_url, sample=3, prices=PRICES)
    data = yaml.safe_load(recipe.read_text())
    data["tasks"] = {"detail": data["tasks"]["detail"]}
    data["filters"] = [{"type": "judge", "generator": "llm", "votes": 2}]
    data["report"] = {"type": "release", "indicators": {"response": False}}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    cache = tmp_path / "cache"
    api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache)
    data["filters"][0]["votes"] = 3
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    rows, est = _plan(recipe, cache)
    judge = next(r for r in rows if r["id"] == "measure:judge")
    assert judge["status"] == "stale" and judge["items"] == {"new": 0, "changed": 3, "cached": 0}
    assert est["measure:judge"]["calls"] == 3  # 3 samples x 1 missing vote (a server without n)
    sent = len(one_choice.log)
    again = api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache)
    assert len(one_choice.log) - sent == again.manifest["llm"]["total"]["calls"] == 3
    assert est["measure:judge"]["prompt_tokens"] == pytest.approx(
        again.manifest["llm"]["total"]["prompt_tokens"], rel=0.05)


def test_the_loopback_server_writes_answers_as_long_as_it_is_told():
    from vlitc.llm.parse import parse

    shown = [{"role": "user", "content": "a scene"}, {"role": "assistant", "content": "x" * 300},
             {"role": "user", "content": "b scene"}, {"role": "assistant", "content": "y" * 500},
             {"role": "user", "content": "the scene"}]
    srv = FakeServer(answer_chars="examples")
    dialog = {"messages": [{"role": "system", "content": 'Answer as {"User": ..., "AI": ...}'},
                           *shown]}
    text = srv.reply(dialog, 0, None, srv._length(dialog))
    assert len(text) == 400 and json.loads(text)["AI"].startswith("It shows the scene")
    qa = {"messages": [{"role": "system", "content": "Write a conversation."}, *shown]}
    text = srv.reply(qa, 0, None, srv._length(qa))
    assert len(text) == 400 and parse(text, "llava_qa").turns
    fixed = FakeServer(answer_chars=260)
    assert len(fixed.reply(qa, 0, None, fixed._length(qa))) == 260  # never cut: max_tokens cuts
    assert FakeServer()._length(qa) is None  # one line, as before
