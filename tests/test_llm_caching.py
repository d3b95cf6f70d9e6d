"""Prompt caching through the real SDKs against the loopback server, which bills a repeated
prefix as each provider does: Anthropic ``cache_control`` breakpoints on the system prompt and
the in-context examples, OpenAI's automatic ``cached_tokens``; the usage, the cost at the cache
rates, the saving, the plan's estimate of them, and request keys that caching never changes."""

from __future__ import annotations

import pytest

from tests._llm_util import RECORD, demo_recipe
from vlitc import api
from vlitc.llm import Request, session
from vlitc.llm.cost import PRICES, Price, cost, price_for, saved
from vlitc.llm.fakeserver import FakeServer
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get

EPHEMERAL = {"type": "ephemeral"}
LEAST = 150  # the smallest cached prefix, on the server and in the plan (the packs are short)


@pytest.fixture
def server():
    return FakeServer(keep_bodies=True, cache_min_tokens=LEAST).start_in_thread()


@pytest.fixture
def least(monkeypatch):
    from vlitc.llm import cost as cost_mod

    monkeypatch.setitem(cost_mod.CACHE_MINIMUM, "anthropic", LEAST)
    monkeypatch.setitem(cost_mod.CACHE_MINIMUM, "openai", LEAST)
    monkeypatch.setenv("VLITC_TEST_KEY", "k")


def _claude(server, **extra) -> dict:
    return {"c": {"provider": "anthropic", "model": "claude-sonnet-4-5",
                  "api_key_env": "VLITC_TEST_KEY", "base_url": f"http://127.0.0.1:{server.port}",
                  "retry_backoff": 0.01, "max_concurrency": 1, **extra}}


def _generate(gens: dict, cache, records, examples: int = 2):
    """Run a generate task (llava/conversation, ``examples`` drawn per request)."""
    with session({"generators": gens}, cache) as s:
        ctx = OpContext(seed=3, recipe_dir=cache, step_id="task:conv", generators=gens,
                        _client=s.client)
        name = next(iter(gens))
        op = get("task", "generate")({"source": "coco", "generator": name, "examples": examples,
                                      "prompt": "llava/conversation"}, label="conv")
        out = list(op.run(records, ctx))
        return out, s.usage()


def _records(n: int) -> list[dict]:
    return [dict(RECORD, id=str(i), captions=[f"Scene {i}.", *RECORD["captions"]])
            for i in range(n)]


def test_anthropic_breakpoints_sit_on_the_system_prompt_and_the_last_example(tmp_path, server, least):
    out, usage = _generate(_claude(server), tmp_path, _records(4), examples=10)
    assert len(out) == 4
    bodies = [r["body"] for r in server.log]
    for body in bodies:
        assert body["system"][-1]["cache_control"] == EPHEMERAL
        msgs = body["messages"]  # the pack's 10 examples (user, assistant), then the item
        assert len(msgs) == 21
        assert msgs[19]["role"] == "assistant" and msgs[19]["content"][-1]["cache_control"] == EPHEMERAL
        assert all(not isinstance(m["content"], list) for m in msgs[:19])
        assert isinstance(msgs[20]["content"], str)  # the item itself is never a breakpoint
    # every example drawn (one order): the first call writes the prefix, the next three read it
    got = [r["answer"]["usage"] for r in server.log]
    assert got[0]["cache_read_input_tokens"] == 0 and got[0]["cache_creation_input_tokens"] > 0
    prefix = got[0]["cache_creation_input_tokens"]
    assert all(u["cache_read_input_tokens"] == prefix and u["cache_creation_input_tokens"] == 0
               for u in got[1:])
    total = usage["total"]
    assert total["cache_read_tokens"] == 3 * prefix and total["cache_write_tokens"] == prefix
    # prompt_tokens counts the whole prompt (input_tokens plus both cache counts)
    assert total["prompt_tokens"] == sum(u["input_tokens"] + u["cache_read_input_tokens"]
                                         + u["cache_creation_input_tokens"] for u in got)
    price = price_for("claude-sonnet-4-5")
    assert price == Price(3.0, 15.0, 0.3, 3.75)  # Anthropic's published rates
    want = cost(price, total["prompt_tokens"], total["completion_tokens"], 3 * prefix, prefix)
    assert total["usd"] == pytest.approx(want, abs=1e-6)
    assert total["usd_saved"] == pytest.approx(saved(price, 3 * prefix, prefix), abs=1e-6)
    assert total["usd_saved"] > 0
    assert total["usd"] < cost(price, total["prompt_tokens"], total["completion_tokens"])


def test_prompt_cache_off_sends_no_breakpoint_and_keeps_every_request_key(tmp_path, server, least):
    on, _ = _generate(_claude(server), tmp_path / "on", _records(3))
    off, usage = _generate(_claude(server, prompt_cache=False), tmp_path / "off", _records(3))
    assert [s["meta"]["requests"] for s in on] == [s["meta"]["requests"] for s in off]
    assert [s["turns"] for s in on] == [s["turns"] for s in off]
    later = [r["body"] for r in server.log[3:]]
    assert len(later) == 3 and all(isinstance(b["system"], str) for b in later)
    assert all("cache_control" not in str(b["messages"]) for b in later)
    assert usage["total"]["cache_read_tokens"] == usage["total"]["cache_write_tokens"] == 0
    # the same cache with caching turned off: every answer is reused, nothing is sent
    before = len(server.log)
    again, usage = _generate(_claude(server, prompt_cache=False), tmp_path / "on", _records(3))
    assert len(server.log) == before and usage["total"]["calls"] == 0
    assert [s["turns"] for s in again] == [s["turns"] for s in on]


def test_prompt_cache_is_not_in_the_generator_step_key():
    gen = get("generator", "anthropic")
    on = gen({"model": "claude-sonnet-4-5"}, "c").key_params()
    off = gen({"model": "claude-sonnet-4-5", "prompt_cache": False}, "c").key_params()
    assert on == off


def test_openai_cached_tokens_are_read_through_the_sdk_and_priced(tmp_path, server, least):
    gens = {"g": {"provider": "openai", "model": "gpt-4o-mini", "base_url": server.base_url,
                  "max_concurrency": 1}}
    system = "You write conversations about images. " * 40
    reqs = [Request(messages=[{"role": "system", "content": system},
                              {"role": "user", "content": f"Scene {i}."}], cache_prefix=1)
            for i in range(3)]
    with session({"generators": gens}, tmp_path) as s:
        resps = s.client("g").run(reqs, step="task:t")
        total = s.usage()["total"]
    # the server caches from LEAST tokens on, in steps of 128, as OpenAI does from 1024
    sys_tokens = len(system) // 4
    hit = LEAST + (sys_tokens - LEAST) // 128 * 128
    assert [r.usage["cache_read_tokens"] for r in resps] == [0, hit, hit]
    assert all("cache_control" not in str(r["body"]) for r in server.log)
    price = PRICES["gpt-4o-mini"]
    assert price.cache_read == 0.075 and price.cache_write is None  # writes are free
    assert total["cache_read_tokens"] == 2 * hit and total["cache_write_tokens"] == 0
    assert total["usd"] == pytest.approx(
        cost(price, total["prompt_tokens"], total["completion_tokens"], 2 * hit), abs=1e-6)
    assert total["usd_saved"] == pytest.approx(2 * hit * (0.15 - 0.075) / 1e6, abs=1e-6)


def test_recipe_cache_prices_override_the_table(tmp_path, server, least):
    prices = {"input": 10.0, "output": 20.0, "cache_read": 1.0, "cache_write": 12.5}
    _, usage = _generate(_claude(server, prices=prices), tmp_path, _records(2), examples=10)
    t = usage["total"]
    want = cost(Price(10.0, 20.0, 1.0, 12.5), t["prompt_tokens"], t["completion_tokens"],
                t["cache_read_tokens"], t["cache_write_tokens"])
    assert t["cache_read_tokens"] > 0 and t["usd"] == pytest.approx(want, abs=1e-6)
    # without cache rates, cached tokens bill at the input rate and save nothing
    assert saved(price_for("x", {"input": 1, "output": 2}), 1000, 0) == 0


@pytest.mark.slow
def test_plan_estimates_the_cached_prompt_tokens_the_build_reports(tmp_path, server, least):
    recipe = demo_recipe("llava-instruct", tmp_path, f"http://127.0.0.1:{server.port}", sample=6,
                         provider="anthropic", model="claude-sonnet-4-5")
    rec, plan, rows = api.plan_status(recipe, tmp_path / "cache")
    est = api.estimates(rec, plan, rows)
    planned = est["totals"]["build"]
    built = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    spent = built.manifest["llm"]["total"]
    assert spent["cache_read_tokens"] > 0 and planned["cache_read_tokens"] > 0
    assert planned["cache_read_tokens"] == pytest.approx(spent["cache_read_tokens"], rel=0.15)
    assert planned["cache_write_tokens"] == pytest.approx(spent["cache_write_tokens"], rel=0.15)
    # what the prompts cost at the cache rates (the loopback's answers are shorter than planned)
    price = price_for("claude-sonnet-4-5")

    def prompt_usd(t: dict) -> float:
        return cost(price, t["prompt_tokens"], 0, t["cache_read_tokens"], t["cache_write_tokens"])

    assert prompt_usd(planned) == pytest.approx(prompt_usd(spent), rel=0.1)
    assert planned["usd_saved"] > 0 and spent["usd_saved"] > 0
    # the report's LLM section shows the cached tokens and the saving
    page = (tmp_path / "out" / "report.html").read_text()
    assert "of them cached (read / written)" in page and "saved by prompt caching" in page
    conv = next(s for s in built.manifest["steps"] if s["id"] == "task:conversation")
    assert conv["counters"]["cache_read_tokens"] > 0
