"""The generator layer's request store, retries, limits, budget and accounting (mock backend)."""

from __future__ import annotations

import asyncio

import pytest

from vlitc.errors import BudgetExceeded, ConfigurationError, GenerationError
from vlitc.llm import Request, session
from vlitc.llm.limits import Bucket, Limits
from vlitc.llm.retry import ProviderError, parse_retry_after
from vlitc.llm.types import base_request, sample_key

QA = "Question:\nWhat is it?\n===\nAnswer:\nIt is {{ last_user }} #{{ index }}"


def _recipe(**gen) -> dict:
    return {"generators": {"m": {"provider": "mock", "template": QA, "retry_backoff": 0.0, **gen}}}


def _reqs(*texts: str, n: int = 1) -> list[Request]:
    return [Request(messages=[{"role": "user", "content": t}], n=n) for t in texts]


def test_request_key_is_pinned():
    req = Request(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                  temperature=0.8)
    base = base_request("openai", "gpt-4o-mini", req, {"max_tokens": 512})
    assert base == {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.8,
                    "top_p": None, "max_tokens": 512, "seed": None, "stop": None,
                    "response_format": None,
                    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    assert sample_key(base, 0) == PINNED_KEY
    assert sample_key(base, 1) != sample_key(base, 0)


PINNED_KEY = "493c823580657dd55e4f18513aecd2c836f95f95dbef8b4843938ce30976a1e1"


def test_rebuild_makes_zero_calls(tmp_path):
    with session(_recipe(), tmp_path) as s:
        first = s.client("m").run(_reqs("a", "b"), step="task:t")
        assert len(s.client("m").provider().calls) == 2
    with session(_recipe(), tmp_path) as s:
        again = s.client("m").run(_reqs("a", "b"), step="task:t")
        assert s.client("m")._provider is None  # never even built: no key needed
        assert s.usage()["total"]["calls"] == 0 and s.usage()["total"]["cached"] == 2
    assert [r.texts for r in again] == [r.texts for r in first]
    assert all(r.cached for r in again) and not any(r.cached for r in first)
    assert [r.request_id for r in again] == [r.request_id for r in first]


def test_raising_n_pays_only_for_the_new_samples(tmp_path):
    with session(_recipe(), tmp_path) as s:
        two = s.client("m").run(_reqs("a", n=2))[0]
        three = s.client("m").run(_reqs("a", n=3))[0]
        calls = s.client("m").provider().calls
    assert three.texts[:2] == two.texts and three.texts[2] == "Question:\nWhat is it?\n===\nAnswer:\nIt is a #2"
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert three.request_id == two.request_id == three.keys[0]


def test_injected_server_errors_are_retried_until_success(tmp_path):
    with session(_recipe(fail={"rate": 1.0, "status": 500, "attempts": 2}), tmp_path) as s:
        out = s.client("m").run(_reqs("a", "b"), step="task:t")
        usage = s.usage()
    assert [r.error for r in out] == [None, None]
    assert usage["steps"]["task:t"]["retries"] == 4 and usage["total"]["calls"] == 2


def test_non_retryable_status_stops_the_step_naming_the_generator(tmp_path):
    with session(_recipe(fail={"rate": 1.0, "status": 401, "attempts": 0}), tmp_path) as s:
        with pytest.raises(GenerationError, match=r"generator m \(mock mock\) in step task:t: HTTP 401"):
            s.client("m").run(_reqs("a"), step="task:t")


def test_a_request_that_finally_fails_is_recorded_per_item(tmp_path):
    with session(_recipe(fail={"rate": 0.5, "status": 503, "attempts": 0}, max_retries=1),
                 tmp_path) as s:
        out = s.client("m").run(_reqs(*"abcdefgh"), step="task:t")
        usage = s.usage()["total"]
    failed = [r for r in out if r.error]
    assert failed and len(failed) < len(out)
    assert all("HTTP 503" in r.error and r.texts == [] for r in failed)
    assert usage["failed"] == len(failed) and usage["samples"] == len(out) - len(failed)


def test_export_then_frozen_rebuild_makes_no_calls(tmp_path):
    with session(_recipe(), tmp_path / "cache") as s:
        texts = [r.texts for r in s.client("m").run(_reqs("a", "b"))]
        path = s.export_store(tmp_path / "release")
    assert path.name == "llm_responses.jsonl" and len(path.read_text().splitlines()) == 2
    with session(_recipe(), tmp_path / "empty", frozen=True, store=tmp_path / "release") as s:
        again = [r.texts for r in s.client("m").run(_reqs("a", "b"))]
        assert s.client("m")._provider is None
    assert again == texts


def test_frozen_cache_miss_names_the_request(tmp_path):
    with session(_recipe(), tmp_path, frozen=True) as s:
        with pytest.raises(GenerationError, match=r"frozen build: generator m .* step task:x .*'new'"):
            s.client("m").run(_reqs("new"), step="task:x")


def test_budget_stops_cleanly_and_keeps_finished_work(tmp_path):
    recipe = _recipe(prices={"input": 1e6, "output": 0}, max_concurrency=1)
    recipe["budget"] = {"max_usd": 5}
    with session(recipe, tmp_path) as s:
        with pytest.raises(BudgetExceeded, match="max_usd 5"):
            s.client("m").run(_reqs(*"abcdefgh"), step="task:t")
        spent = s.usage()["total"]["calls"]
    assert 0 < spent < 8
    recipe["budget"] = {"max_usd": 1000}
    with session(recipe, tmp_path) as s:
        out = s.client("m").run(_reqs(*"abcdefgh"), step="task:t")
        assert s.usage()["total"]["calls"] == 8 - spent
    assert all(r.error is None for r in out)


def test_an_item_left_unsent_by_the_budget_is_the_budget_error_not_a_failure_of_its_own(tmp_path):
    """Streaming (as a task does under on_error: fail, which stops at its first failed item),
    the first item the budget left unsent raises BudgetExceeded, never an item error."""
    recipe = _recipe(prices={"input": 1e6, "output": 0}, max_concurrency=1)
    recipe["budget"] = {"max_usd": 5}
    answered = 0
    with session(recipe, tmp_path) as s:
        with pytest.raises(BudgetExceeded, match="max_usd 5"):
            for _req, resp in s.client("m").stream(_reqs(*"abcdefgh"), lambda r: r, step="task:t"):
                assert resp is not None and resp.error is None
                answered += 1
        assert answered == s.usage()["total"]["calls"] < 8


def test_progress_events_and_usage_per_step_and_generator(tmp_path):
    events: list[dict] = []
    with session(_recipe(prices={"input": 1.0, "output": 2.0}), tmp_path, events.append) as s:
        s.client("m").run(_reqs("a", "b", "c"), step="task:t")
        usage = s.usage()
    assert events[-1] == {"event": "llm", "step": "task:t", "generator": "m", "done": 3, "total": 3,
                          "usd": usage["total"]["usd"],
                          "tokens": usage["total"]["prompt_tokens"] + usage["total"]["completion_tokens"],
                          "step_llm": usage["steps"]["task:t"]}
    assert usage["steps"]["task:t"]["calls"] == usage["generators"]["m"]["calls"] == 3
    assert usage["total"]["usd"] > 0


def test_unknown_generator_is_a_configuration_error(tmp_path):
    with session(_recipe(), tmp_path) as s, pytest.raises(ConfigurationError, match="recipe has: m"):
        s.client("gpt")


def test_openai_key_comes_from_the_named_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    recipe = {"generators": {"g": {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "MY_KEY"}}}
    with session(recipe, tmp_path) as s, pytest.raises(ConfigurationError, match="MY_KEY is not set"):
        s.client("g").run(_reqs("a"))


def test_retry_after_headers_are_read():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None
    assert ProviderError("x", status=429).retryable and not ProviderError("x", status=404).retryable
    assert ProviderError("t", kind="timeout").retryable


def test_token_bucket_refills_with_time_and_settles_real_usage():
    now = [0.0]

    async def go() -> Bucket:
        b = Bucket(600, clock=lambda: now[0])  # 10 per second
        await b.take(600)
        now[0] = 3.0
        await b.take(25)  # 30 refilled
        return b

    b = asyncio.run(go())
    assert b.level == pytest.approx(5.0)
    b.adjust(-100)  # the call used 100 fewer tokens than reserved
    assert b.level == pytest.approx(105.0)
    lim = Limits(rpm=100)
    lim.tighten(50, None)
    assert lim.requests.capacity == 50 and lim.tokens is None
