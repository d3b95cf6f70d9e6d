"""LLM steps fanned out over worker processes: one governor (per-minute limits and budget) for
every sender of a build, one response store, nothing sent twice, and the same keys and bytes as
a build in one process."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import yaml
from _llm_util import demo_recipe

from vlitc.api import build
from vlitc.errors import BudgetExceeded
from vlitc.llm.cache import ResponseCache
from vlitc.llm.cost import cost
from vlitc.llm.fakeserver import FakeServer
from vlitc.llm.fanout import GovernorManager
from vlitc.llm.limits import Governor

PRICE = {"input": 100.0, "output": 100.0}  # USD per million tokens: a call costs about $0.1


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _recipe(tmp_path: Path, base_url: str, budget: float | None = None, **generator) -> Path:
    """llava-instruct on 12 demo scenes in chunks of 5 records (so that its three generate steps
    are map steps), without the embedding model."""
    recipe = demo_recipe("llava-instruct", tmp_path, base_url, sample=12, **generator)
    data = yaml.safe_load(recipe.read_text())
    data["report"] = {"indicators": {"response": False}}
    data["execution"] = {"chunk": 5}
    if budget is not None:
        data["budget"] = {"max_usd": budget}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe


def _at_one_and_two_workers(recipe: Path, srv: FakeServer, tmp_path: Path) -> tuple[dict, dict]:
    """Build ``recipe`` at 1 and 2 workers (``out1``/``cache1``, ``out2``/``cache2``): the
    requests each build sent (body hashes, sorted) and its result, by worker count."""
    sent, results = {}, {}
    for workers in (1, 2):
        before = len(srv.log)
        results[workers] = build(recipe, out_dir=tmp_path / f"out{workers}",
                                 cache_dir=tmp_path / f"cache{workers}", workers=workers)
        sent[workers] = sorted(r["body_sha256"] for r in srv.log[before:])
    return sent, results


def _with(recipe: Path, **changes) -> Path:
    """``recipe`` with top-level sections changed by ``changes`` (functions of the old value)."""
    data = yaml.safe_load(recipe.read_text())
    for key, change in changes.items():
        data[key] = change(data.get(key))
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe


def test_governor_budget_reserves_what_is_in_flight_and_stops_at_the_limit():
    g = Governor({"max_usd": 1.0})
    assert g.admit("openai:m", None, None, 0.4, 10) == (None, 0.0)
    assert g.admit("openai:m", None, None, 0.4, 10) == (None, 0.0)
    assert g.admit("openai:m", None, None, 0.4, 10) == ("wait", 0.0)  # only the calls in flight
    g.settle("openai:m", 0.4, 10, 0.1, 8)  # the first cost less than reserved
    assert g.admit("openai:m", None, None, 0.4, 10) == (None, 0.0)
    g.settle("openai:m", 0.4, 10, 0.9, 8)
    verdict, _ = g.admit("openai:m", None, None, 0.4, 10)
    assert verdict is not None and verdict.startswith("max_usd 1.0 (spent $1.0000)")
    assert g.state()["calls"] == 3


def test_governor_spaces_calls_first_come_first_served_under_the_per_minute_limits():
    g = Governor()
    waits = [g.admit("openai:m", 6, None, 0.0, 1)[1] for _ in range(9)]  # one per 10 s, 6 at once
    assert waits[:6] == [0.0] * 6
    assert waits[6:] == pytest.approx([10.0, 20.0, 30.0], abs=1.0)
    # two generators on one model share the stricter limit; another model has its own
    assert g.admit("openai:m", 600, None, 0.0, 1)[1] == pytest.approx(40.0, abs=1.0)
    assert g.admit("openai:other", 6, None, 0.0, 1)[1] == 0.0
    # tokens per minute: reserved from the estimate, corrected with the real usage
    assert g.admit("anthropic:c", None, 60, 0.0, 60)[1] == 0.0
    assert g.admit("anthropic:c", None, 60, 0.0, 30)[1] == pytest.approx(30.0, abs=1.0)
    g.settle("anthropic:c", 0.0, 60, 0.0, 20)  # the first used 40 fewer than reserved
    assert g.admit("anthropic:c", None, 60, 0.0, 10)[1] == pytest.approx(0.0, abs=1.0)


def _admit_many(governor, n: int, out) -> None:
    out.put([governor.admit("openai:m", 6, None, 0.0, 1)[1] for _ in range(n)])


def test_one_governor_serves_the_limits_of_several_processes():
    ctx = multiprocessing.get_context("forkserver")
    with GovernorManager(ctx=ctx) as manager:
        governor = manager.Governor()  # type: ignore[attr-defined]
        out = ctx.Queue()
        procs = [ctx.Process(target=_admit_many, args=(governor, 5, out)) for _ in range(2)]
        for p in procs:
            p.start()
        waits = sorted(out.get(timeout=60) + out.get(timeout=60))
        for p in procs:
            p.join()
        # 10 calls from two processes under one limit of 6 a minute: 6 at once, then one
        # every 10 s, one queue for both (seconds pass between the calls: hence the margin)
        assert waits[:6] == [0.0] * 6
        assert waits[6:] == pytest.approx([10.0, 20.0, 30.0, 40.0], abs=3.0)
        assert governor.state()["calls"] == 10


@pytest.mark.exercises("task.generate")
def test_generate_at_one_and_two_workers_sends_the_same_requests_and_gives_the_same_bytes(
        tmp_path, monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer().start_in_thread()
    recipe = _recipe(tmp_path, srv.base_url)
    sent, results = _at_one_and_two_workers(recipe, srv, tmp_path)
    assert sent[1] == sent[2] and len(sent[2]) == len(set(sent[2])) == 36  # each sent once
    one, two = (results[w].manifest for w in (1, 2))
    assert [(s["id"], s["key"]) for s in one["steps"]] == [(s["id"], s["key"]) for s in two["steps"]]
    assert _files(tmp_path / "out1") == _files(tmp_path / "out2")
    # the workers' calls, tokens and spend are the build's
    for part in ("total", "steps", "generators"):
        assert one["llm"][part] == two["llm"][part]
    assert two["llm"]["total"]["calls"] == 36
    # a rebuild at two workers sends nothing
    again = build(recipe, out_dir=tmp_path / "again", cache_dir=tmp_path / "cache2", workers=2,
                  force=["all"])
    assert again.manifest["llm"]["total"]["calls"] == 0 and len(srv.log) == 72


def test_model_filters_fan_out_sending_each_vote_once_with_the_same_bytes(tmp_path, monkeypatch):
    """The judge and complexity filters measure in the workers (chunks of 5 of the samples):
    the same requests, each once, the same stats, usage and release as one process."""
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer().start_in_thread()
    recipe = _with(_recipe(tmp_path, srv.base_url), filters=lambda old: [
        *(old or []), {"type": "judge", "generator": "llm", "votes": 2, "tie": "keep"},
        {"type": "complexity", "generator": "llm"}])
    sent, results = _at_one_and_two_workers(recipe, srv, tmp_path)
    assert sent[1] == sent[2] and len(sent[2]) == len(set(sent[2]))
    one, two = (results[w].manifest for w in (1, 2))
    assert [(s["id"], s["key"], s["counters"]) for s in one["steps"]] == \
        [(s["id"], s["key"], s["counters"]) for s in two["steps"]]
    judged = next(s for s in two["steps"] if s["id"] == "measure:judge")
    assert judged["n_in"] > 5 and judged["counters"]["llm_requests"] == judged["counters"]["measured"]
    assert _files(tmp_path / "out1") == _files(tmp_path / "out2")

    def spent(manifest: dict) -> dict:  # calls, tokens, dollars (not how many were cache hits:
        # two identical votes are one call either way, the second a hit only if the first's
        # answer came back before it was asked, which depends on timing)
        return {step: {k: v for k, v in row.items() if k != "cached"}
                for step, row in manifest["llm"]["steps"].items()}

    assert spent(one) == spent(two)
    assert one["llm"]["total"]["calls"] == two["llm"]["total"]["calls"] == len(sent[2])


def test_rewrite_fans_out_over_the_samples_of_its_tasks(tmp_path, monkeypatch):
    """A rewrite of two tasks' samples is a map step over both, one after another: the same
    requests, each once, and the same bytes as one process."""
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer().start_in_thread()
    recipe = _with(_recipe(tmp_path, srv.base_url), tasks=lambda old: {
        **old, "tight": {"kind": "rewrite", "task": ["conversation", "detail"], "generator": "llm"}})
    sent, results = _at_one_and_two_workers(recipe, srv, tmp_path)
    assert sent[1] == sent[2] and len(sent[2]) == len(set(sent[2])) == 36 + 24  # 24 rewrites
    one, two = (results[w].manifest for w in (1, 2))
    assert [(s["id"], s["key"], s["counters"]) for s in one["steps"]] == \
        [(s["id"], s["key"], s["counters"]) for s in two["steps"]]
    assert next(s for s in two["steps"] if s["id"] == "task:tight")["counters"]["rewritten"] == 24
    assert _files(tmp_path / "out1") == _files(tmp_path / "out2")


def _spent(cache_dir: Path) -> tuple[float, int]:
    """What the responses in a build's store cost, and how many calls they came from."""
    store = ResponseCache(cache_dir / "llm")
    try:
        entries = [store.get(k) for k in list(store._dc)]
    finally:
        store.close()
    price = (PRICE["input"], PRICE["output"])
    calls = [e for e in entries if e is not None and e["usage"]["prompt_tokens"]]
    usd = sum(cost(price, e["usage"]["prompt_tokens"], e["usage"]["completion_tokens"])
              for e in entries if e is not None)
    return usd, len(calls)


@pytest.mark.slow
def test_the_budget_holds_across_workers_and_stops_where_one_process_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer(latency=0.05).start_in_thread()
    limit = 1.5  # about 15 of the 36 calls
    spent = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        recipe = _recipe(folder, srv.base_url, budget=limit, prices=PRICE, max_tokens=64)
        with pytest.raises(BudgetExceeded, match=f"max_usd {limit}"):
            build(recipe, out_dir=tmp_path / f"out{workers}", cache_dir=tmp_path / f"cache{workers}",
                  workers=workers)
        spent[workers] = _spent(tmp_path / f"cache{workers}")
    one_call = 0.2  # the largest a call of these costs, with a margin
    for workers, (usd, calls) in spent.items():
        assert usd <= limit, (workers, usd)  # never over the budget: every sender shares it
        assert limit - usd < 3 * one_call and 8 < calls < 36, (workers, usd, calls)


def test_failed_items_listed_by_each_chunk_add_up_in_order():
    from vlitc.ops.base import OpContext
    from vlitc.ops.model import FAILED, MAX_LISTED
    from vlitc.run.shards import ChunkResult, merge_chunk

    ctx = OpContext(seed=1, recipe_dir=Path("."))
    for part in range(3):
        items = [{"item": f"{part}-{i}", "error": "HTTP 500"} for i in range(40)]
        merge_chunk(ctx, ChunkResult(counters={FAILED: 40}, notes={FAILED: items}))
    listed = ctx.notes[FAILED]
    assert ctx.counters[FAILED] == 120 and len(listed) == MAX_LISTED
    assert listed[0]["item"] == "0-0" and listed[40]["item"] == "1-0" and listed[-1]["item"] == "2-19"
