"""Generators with ``batch: true``: requests through the real openai and anthropic SDKs to the
loopback server's batch endpoints (files upload and content, batches create and retrieve,
Anthropic's message batches and their results), resumed after a stop or a kill instead of sent
again, stored in the same per-request cache as streamed requests, priced at the batch price."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests._llm_util import ROOT
from vlitc import api
from vlitc.errors import BudgetExceeded, GenerationError
from vlitc.llm import Request, session
from vlitc.llm.batch import open_batches
from vlitc.llm.cost import BATCH_FACTOR, generator_price
from vlitc.llm.fakeserver import FakeServer

PRICES = {"input": 1.0, "output": 2.0}


@pytest.fixture
def server():
    return FakeServer(keep_bodies=True).start_in_thread()


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "sk-test")


def _msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def _reqs(k: int, n: int = 1, start: int = 0) -> list[Request]:
    return [Request(messages=_msgs(f"Scene {i}."), n=n) for i in range(start, start + k)]


def _gen(server: FakeServer, provider: str = "openai", **extra) -> dict:
    base = server.base_url if provider == "openai" else f"http://127.0.0.1:{server.port}"
    model = "gpt-4o-mini" if provider == "openai" else "claude-3-5-haiku"
    return {"provider": provider, "model": model, "base_url": base, "api_key_env": "VLITC_TEST_KEY",
            "batch": True, "batch_poll": 0.02, "retry_backoff": 0.01, "max_retries": 3,
            "max_tokens": 64, "on_error": "skip", **extra}


def _run(cache: Path, gen: dict, requests: list[Request], recipe: dict | None = None):
    with session({"generators": {"g": gen}, **(recipe or {})}, cache) as s:
        out = s.client("g").run(requests, step="task:t")
        return out, s.usage()


def _paths(server: FakeServer, since: int = 0) -> list[str]:
    return [r["path"] for r in server.log[since:]]


def _answered(server: FakeServer, since: int = 0) -> list[dict]:
    return [r for r in server.log[since:] if r["path"].startswith("batch:") and r["outcome"] == "ok"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_batch_answers_through_the_sdk_and_a_streamed_build_reuses_every_answer(
        tmp_path, server, provider):
    out, usage = _run(tmp_path, _gen(server, provider), _reqs(5, n=2))
    assert server.batches_created == 1
    assert all(r.error is None and len(r.texts) == 2 for r in out)
    assert "It shows Scene 3." in out[3].texts[0]
    # n samples cost n calls on this server (as the plan counts them): one batch line each
    assert len(_answered(server)) == 10 and usage["total"]["batched"] == 10
    assert usage["total"]["calls"] == 10 and usage["total"]["batches"] == 1
    routes = set(_paths(server))
    if provider == "openai":
        assert {"/v1/files", "/v1/batches", "/v1/batches/batch_1"} <= routes
        assert any(p.startswith("/v1/files/file-") and p.endswith("/content") for p in routes)
    else:
        assert {"/v1/messages/batches", "/v1/messages/batches/msgbatch_1",
                "/v1/messages/batches/msgbatch_1/results"} <= routes
    assert open_batches(tmp_path) == []  # collected, so forgotten
    before = len(server.log)
    again, usage2 = _run(tmp_path, _gen(server, provider, batch=False), _reqs(5, n=2))
    assert len(server.log) == before  # the streaming path finds every answer in the store
    assert [r.texts for r in again] == [r.texts for r in out] and usage2["total"]["cached"] == 10
    assert [r.keys for r in again] == [r.keys for r in out]


def test_requests_already_in_the_cache_are_never_put_in_a_batch(tmp_path, server):
    streamed, _ = _run(tmp_path, _gen(server, batch=False), _reqs(2))
    assert server.batches_created == 0 and _paths(server) == ["/v1/chat/completions"] * 2
    out, usage = _run(tmp_path, _gen(server), _reqs(5))
    [batch] = server.batches.values()
    assert len(batch["requests"]) == 3  # only the three the store lacked
    assert {r["custom_id"] for r in batch["requests"]} == {r.keys[0] for r in out[2:]}
    assert [r.texts for r in out[:2]] == [r.texts for r in streamed]
    assert usage["total"]["cached"] == 2 and usage["total"]["batched"] == 3


def test_the_batch_line_is_the_request_the_sdk_would_stream(tmp_path, server):
    gen = _gen(server, temperature=0.3, seed=5, stop=["###"])
    _run(tmp_path / "a", {**gen, "batch": False}, _reqs(1))
    streamed = server.log[-1]["body"]
    _run(tmp_path / "b", gen, _reqs(1))
    [batch] = server.batches.values()
    assert batch["requests"][0]["body"] == streamed


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_images_travel_in_the_batch_and_the_answers_key_like_streamed_ones(tmp_path, server,
                                                                           provider):
    from PIL import Image

    from vlitc.llm.vision import ImageSource, image_part, text_part

    path = tmp_path / "red.png"
    im = Image.new("RGB", (320, 240), (250, 250, 250))
    im.paste(Image.new("RGB", (160, 120), (220, 40, 40)), (80, 60))
    im.save(path)
    import hashlib

    src = ImageSource(hashlib.sha256(path.read_bytes()).hexdigest(), str(path))
    ask = [Request(messages=[{"role": "system", "content": "You describe images."},
                             {"role": "user", "content": [image_part(src), text_part("What?")]}])]
    gen = _gen(server, provider, vision=True)
    out, usage = _run(tmp_path / "c", gen, ask)
    assert "the dominant colour is red" in out[0].texts[0] and usage["total"]["images"] == 1
    assert usage["total"]["image_tokens"] > 0
    [answered] = _answered(server)
    assert answered["body"]["messages"] and server.batches_created == 1
    before = len(server.log)
    again, _ = _run(tmp_path / "c", {**gen, "batch": False}, ask)
    assert len(server.log) == before and again[0].texts == out[0].texts


def test_batches_larger_than_batch_max_requests_are_split(tmp_path, server):
    out, usage = _run(tmp_path, _gen(server, batch_max_requests=2), _reqs(5))
    assert server.batches_created == 3 and usage["total"]["batches"] == 3
    assert sorted(len(b["requests"]) for b in server.batches.values()) == [1, 2, 2]
    assert all(r.error is None for r in out)


def test_batch_prices_are_half_and_a_recipe_can_set_its_share():
    gen = {"provider": "openai", "model": "gpt-4o-mini"}
    full, half = generator_price(gen), generator_price({**gen, "batch": True})
    assert full is not None and half is not None and BATCH_FACTOR == 0.5
    assert (half.input, half.output) == (full.input * 0.5, full.output * 0.5)
    assert half.cache_read == pytest.approx(full.read_rate() * 0.5)  # every rate, cached too
    own = generator_price({**gen, "batch": True, "prices": {"input": 1, "output": 2, "batch": 0.25}})
    assert own is not None and (own.input, own.output) == (0.25, 0.5)


def test_the_reports_llm_section_prices_a_batch_generator_at_the_batch_price():
    from vlitc.release.summary import llm_rows

    gen = {"provider": "openai", "model": "gpt-4o-mini", "prices": PRICES}
    steps = [{"id": "task:t", "counters": {"llm_requests": 2, "prompt_tokens": 1000,
                                           "completion_tokens": 500}}]
    tasks = {"t": {"kind": "generate", "generator": "g", "prompt": "llava/detail"}}
    [full] = llm_rows({"generators": {"g": gen}, "tasks": tasks}, steps)
    [half] = llm_rows({"generators": {"g": {**gen, "batch": True}}, "tasks": tasks}, steps)
    assert full["usd"] == pytest.approx(0.002) and half["usd"] == pytest.approx(0.001)


def test_accounting_is_at_the_batch_price(tmp_path, server):
    _, streamed = _run(tmp_path / "a", _gen(server, batch=False, prices=PRICES), _reqs(3))
    _, batched = _run(tmp_path / "b", _gen(server, prices=PRICES), _reqs(3))
    s, b = streamed["total"], batched["total"]
    assert (s["prompt_tokens"], s["completion_tokens"]) == (b["prompt_tokens"], b["completion_tokens"])
    assert b["usd"] == pytest.approx(s["usd"] / 2, abs=2e-6) and b["usd"] > 0
    _, own = _run(tmp_path / "c", _gen(server, prices={**PRICES, "batch": 0.25}), _reqs(3))
    assert own["total"]["usd"] == pytest.approx(s["usd"] / 4, abs=2e-6)  # prices: {batch: share}


def test_failed_batch_requests_are_sent_again_in_a_new_batch_up_to_max_retries(tmp_path):
    srv = FakeServer(batch_fail_rate=0.5, seed=2).start_in_thread()
    out, usage = _run(tmp_path, _gen(srv, max_retries=8), _reqs(6))
    assert all(r.error is None for r in out)
    assert srv.batches_created > 1 and usage["total"]["retries"] > 0
    failed = [r for r in srv.log if r["path"].startswith("batch:") and r["outcome"] == "500"]
    assert failed and usage["total"]["batched"] == 6 and usage["total"]["failed"] == 0


def test_failures_follow_on_error_and_are_never_cached(tmp_path):
    srv = FakeServer(batch_fail_rate=0.5, seed=2).start_in_thread()
    out, usage = _run(tmp_path, _gen(srv, max_retries=0), _reqs(6))
    bad = [i for i, r in enumerate(out) if r.error]
    assert bad and len(bad) < 6 and usage["total"]["failed"] == len(bad)
    assert all("HTTP 500" in out[i].error for i in bad)
    srv.batch_fail_rate = 0.0
    created = srv.batches_created
    again, usage2 = _run(tmp_path, _gen(srv, max_retries=0), _reqs(6))
    assert all(r.error is None for r in again)
    assert srv.batches_created == created + 1
    # only the failed requests went into the new batch
    assert len(srv.batches[f"batch_{created + 1}"]["requests"]) == len(bad)
    assert usage2["total"]["cached"] == 6 - len(bad)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_requests_fail_under_on_error_and_the_next_build_sends_only_them(tmp_path, provider):
    srv = FakeServer(batch_expire_after=2).start_in_thread()
    out, usage = _run(tmp_path, _gen(srv, provider), _reqs(5))
    assert [r.error is None for r in out].count(True) == 2
    assert all("expired" in r.error for r in out if r.error) and usage["total"]["failed"] == 3
    srv.batch_expire_after = None
    again, _ = _run(tmp_path, _gen(srv, provider), _reqs(5))
    assert all(r.error is None for r in again)
    last = srv.batches[max(srv.batches, key=lambda b: int(b.split("_")[1]))]
    assert len(last["requests"]) == 3


def test_a_batch_collected_again_is_neither_stored_nor_counted_twice(tmp_path):
    from vlitc.llm.batch import BatchBook

    srv = FakeServer().start_in_thread()
    first_out, first = _run(tmp_path, _gen(srv), _reqs(3))
    rec = {"id": "batch_1", "generator": "g", "provider": "openai", "model": "gpt-4o-mini",
           "step": "task:t", "created": 0.0,
           "items": {cid: keys for cid, keys in ((r["custom_id"], [r["custom_id"]])
                                                 for r in srv.batches["batch_1"]["requests"])}}
    book = BatchBook(tmp_path)
    book.record(rec)  # as if a build had stored two answers and been killed before the third
    book.close()
    from vlitc.llm.cache import ResponseCache

    store = ResponseCache(tmp_path)
    lost = first_out[0].keys[0]
    store._dc.delete(lost)
    store.close()
    out, again = _run(tmp_path, _gen(srv), _reqs(3))
    assert all(r.error is None for r in out) and srv.batches_created == 1  # batch_1 collected
    assert first["total"]["calls"] == 3 and again["total"]["calls"] == 1  # the lost one only
    assert again["total"]["cached"] == 2 and open_batches(tmp_path) == []


def test_a_build_stopped_at_batch_wait_is_resumed_by_the_next_one(tmp_path):
    srv = FakeServer(batch_hold=True).start_in_thread()
    with pytest.raises(GenerationError, match=r"still running after batch_wait 0.2 s"):
        _run(tmp_path, _gen(srv, batch_wait=0.2), _reqs(4))
    [rec] = open_batches(tmp_path)
    assert rec["id"] == "batch_1" and len(rec["items"]) == 4 and rec["step"] == "task:t"
    srv.batch_hold = False
    out, usage = _run(tmp_path, _gen(srv), _reqs(4))
    assert srv.batches_created == 1  # the open batch was collected, not sent again
    assert all(r.error is None for r in out) and usage["total"]["batched"] == 4
    assert open_batches(tmp_path) == []


def test_the_progress_shows_the_open_batches(tmp_path):
    from vlitc.ui.progress import StepState

    srv = FakeServer(batch_step=1).start_in_thread()
    events: list[dict] = []
    with session({"generators": {"g": _gen(srv)}}, tmp_path, emit=events.append) as s:
        s.client("g").run(_reqs(3), step="task:t")
    batch = [e["batch"] for e in events if e.get("batch")]
    assert batch[0]["open"] == 1 and batch[0]["done"] < 3 and batch[-1]["open"] == 0
    assert [b["done"] for b in batch] == sorted(b["done"] for b in batch)
    st = StepState({"step": "task:t", "index": 1, "of": 1})
    st.update(next(e for e in events if e.get("batch")))
    assert "1 of 1 batch(es) open" in st.details() and "in_progress" in st.details()


def test_the_budget_leaves_out_what_does_not_fit_and_stops(tmp_path, server):
    gen = _gen(server, prices={"input": 1000.0, "output": 1000.0})
    with pytest.raises(BudgetExceeded, match="max_usd"):
        _run(tmp_path, gen, _reqs(6), recipe={"budget": {"max_usd": 0.2}})
    [batch] = server.batches.values()
    assert 0 < len(batch["requests"]) < 6  # only what fits was submitted; it is cached


def test_a_provider_batch_id_the_server_does_not_know_is_sent_again(tmp_path, server):
    held = FakeServer(batch_hold=True).start_in_thread()
    # the generator names its model revision, so its keys do not name the endpoint: the same
    # requests on another server find the batch recorded on the first one
    with pytest.raises(GenerationError, match="batch_wait"):
        _run(tmp_path, _gen(held, model_revision="r1", batch_wait=0.1), _reqs(2))
    assert [r["id"] for r in open_batches(tmp_path)] == ["batch_1"]
    out, _ = _run(tmp_path, _gen(server, model_revision="r1"), _reqs(2))
    assert all(r.error is None for r in out) and server.batches_created == 1
    assert "/v1/batches/batch_1" in _paths(server)  # asked, unknown there (404), sent again
    assert open_batches(tmp_path) == []


# the recipe ------------------------------------------------------------------------------------
def batch_recipe(tmp: Path, server: FakeServer, sample: int = 4, **gen) -> Path:
    """``recipes/batch-instruct.yaml`` with both generators on the loopback server."""
    data = yaml.safe_load((ROOT / "recipes" / "batch-instruct.yaml").read_text())
    for src in data["sources"].values():
        for k in ("images", "captions", "instances"):
            src[k] = str(ROOT / "recipes" / src[k])
        src["sample"] = sample
    data["generators"]["llm"].update(base_url=server.base_url, batch_poll=0.02,
                                     api_key_env="VLITC_TEST_KEY", prices=PRICES, **gen)
    data["generators"]["claude"].update(base_url=f"http://127.0.0.1:{server.port}",
                                        batch_poll=0.02, api_key_env="VLITC_TEST_KEY",
                                        prices=PRICES, **gen)
    path = tmp / "batch-instruct.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_plan_prices_a_batch_recipe_at_half(tmp_path, server, capsys):
    from vlitc.cli.main import main

    batched = batch_recipe(tmp_path, server)
    rec, plan, rows = api.plan_status(batched, tmp_path / "c")
    est = api.estimates(rec, plan, rows)
    (tmp_path / "s").mkdir()
    streamed = batch_recipe(tmp_path / "s", server, batch=False)
    rec2, plan2, rows2 = api.plan_status(streamed, tmp_path / "c")
    est2 = api.estimates(rec2, plan2, rows2)
    for sid in ("task:conversation", "task:detail"):
        assert est[sid]["batch"] and "batch" not in est2[sid]
        assert est[sid]["calls"] == est2[sid]["calls"] == 4
        assert est[sid]["usd"] == pytest.approx(est2[sid]["usd"] / 2, abs=1e-4)
    assert main(["plan", str(batched), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "batchprice" in re.sub(r"[^a-z]", "", capsys.readouterr().out)  # a wrapped table cell
    assert main(["plan", str(batched), "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["build"]["usd"] == est["totals"]["build"]["usd"]
    assert all(r["estimate"]["batch"] for r in out["steps"] if "estimate" in r)


def test_a_batched_generating_step_is_not_cut_into_chunks():
    """Map steps fan out over workers by chunks of at least 1,000 records: a batched step stays
    whole, so its requests make one batch (split only at the provider's limits)."""
    from vlitc.ops.base import OpContext
    from vlitc.ops.registry import get

    op = get("task", "generate")({"source": "coco", "generator": "llm",
                                  "prompt": "llava/conversation"}, label="conv")
    assert op.shardable()
    on = OpContext(seed=1, recipe_dir=ROOT, generators={"llm": {"provider": "openai", "batch": True}})
    off = OpContext(seed=1, recipe_dir=ROOT, generators={"llm": {"provider": "openai"}})
    assert op.batched(on) and not op.batched(off)


@pytest.mark.slow
def test_the_batch_recipe_builds_as_planned_and_a_streamed_rebuild_pays_nothing(tmp_path, server):
    """The recipe as shipped (12 images): the plan's calls are exact and its prompt tokens
    within 5% of what the build accounts; dollars are at half the price table's."""
    recipe = batch_recipe(tmp_path, server, sample=12)
    rec, plan, rows = api.plan_status(recipe, tmp_path / "cache")
    est = api.estimates(rec, plan, rows)
    built = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    llm = built.manifest["llm"]
    steps = ("task:conversation", "task:complex", "task:detail")
    assert server.batches_created == 3  # one per generating step (two OpenAI, one Anthropic)
    assert not [p for p in _paths(server) if p in ("/v1/chat/completions", "/v1/messages")]
    planned, spent = est["totals"]["build"], llm["total"]
    assert sorted(planned["steps"]) == sorted(steps) and not planned["per_item"]
    assert planned["calls"] == spent["calls"] == spent["batched"] == len(_answered(server)) == 36
    assert planned["prompt_tokens"] == pytest.approx(spent["prompt_tokens"], rel=0.05)
    assert spent["completion_tokens"] <= planned["completion_tokens"]
    for sid in steps:
        assert est[sid]["batch"] and est[sid]["calls"] == llm["steps"][sid]["calls"] == 12
    usd = spent["prompt_tokens"] * PRICES["input"] + spent["completion_tokens"] * PRICES["output"]
    assert spent["usd"] == pytest.approx(usd / 1e6 * BATCH_FACTOR, abs=2e-6)
    assert planned["usd"] == pytest.approx(
        (planned["prompt_tokens"] + 2 * planned["completion_tokens"]) / 1e6 * BATCH_FACTOR, abs=1e-4)
    samples = json.loads((tmp_path / "out" / "batch_instruct.json").read_text())
    assert len(samples) > 0
    # the same recipe streamed, its generating steps forced: each answer comes from the store
    (tmp_path / "s").mkdir()
    streamed = batch_recipe(tmp_path / "s", server, sample=12, batch=False)
    before = len(server.log)
    again = api.build(streamed, out_dir=tmp_path / "out2", cache_dir=tmp_path / "cache",
                      force=list(steps))
    assert len(server.log) == before and again.manifest["llm"]["total"]["calls"] == 0
    assert again.manifest["llm"]["total"]["cached"] == 36
    assert json.loads((tmp_path / "out2" / "batch_instruct.json").read_text()) == samples


@pytest.mark.slow
def test_a_batch_build_killed_after_submission_resumes_the_same_batch(tmp_path):
    srv = FakeServer(batch_hold=True).start_in_thread()
    recipe = batch_recipe(tmp_path, srv, sample=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLITC_TEST_KEY": "sk-test"}
    cmd = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet",
           "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "out")], env=env)
    deadline = time.monotonic() + 120
    while not open_batches(tmp_path / "cache" / "llm") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the build ended before it was killed"
    [rec] = open_batches(tmp_path / "cache" / "llm")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert srv.batches_created == 1 and len(rec["items"]) == 3
    srv.batch_hold = False
    subprocess.run([*cmd, "--out", str(tmp_path / "out")], env=env, check=True, timeout=300)
    first = [b for b in srv.batches.values() if b["id"] == rec["id"]]
    assert first and first[0]["ended"]  # the killed build's batch was collected
    # one creation per generating step: the killed build's batch was not created again
    assert srv.batches_created == 3
    same = [b for b in srv.batches.values()
            if {r["custom_id"] for r in b["requests"]} & set(rec["items"])]
    assert [b["id"] for b in same] == [rec["id"]]
    assert open_batches(tmp_path / "cache" / "llm") == []
    assert json.loads((tmp_path / "out" / "batch_instruct.json").read_text())
