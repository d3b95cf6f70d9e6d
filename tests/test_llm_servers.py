"""The openai and anthropic providers through their official SDKs against loopback servers:
plain calls, fault injection (429, 500, timeouts, malformed bodies) and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests._llm_util import ROOT, demo_recipe
from vlitc.errors import GenerationError
from vlitc.llm import Request, session
from vlitc.llm.fakeserver import FakeServer


def _msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


@pytest.fixture
def server():
    return FakeServer().start_in_thread()


def test_openai_provider_asks_for_n_samples_in_one_call(tmp_path, server):
    gens = {"g": {"provider": "openai", "model": "fake", "base_url": server.base_url}}
    with session({"generators": gens}, tmp_path) as s:
        [resp] = s.client("g").run([Request(messages=_msgs("A cat."), n=3)], step="task:t")
    assert len(server.log) == 1 and server.log[0]["path"] == "/v1/chat/completions"
    assert [t.split("sample ")[1][:1] for t in resp.texts] == ["0", "1", "2"]
    assert resp.finish_reasons == ["stop"] * 3 and resp.usage["prompt_tokens"] > 0


def test_anthropic_provider_speaks_the_messages_api(tmp_path, server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-test")
    gens = {"c": {"provider": "anthropic", "model": "claude-3-5-haiku", "base_url": f"http://127.0.0.1:{server.port}",
                  "api_key_env": "ANTHROPIC_TEST_KEY", "max_tokens": 64}}
    with session({"generators": gens}, tmp_path) as s:
        out = s.client("c").run([Request(messages=_msgs("A dog."), n=2)], step="task:t")
        usage = s.usage()
    assert [r["path"] for r in server.log] == ["/v1/messages", "/v1/messages"]  # one call per sample
    assert out[0].texts[0].startswith("Question:\nWhat does the image show?\n===\nAnswer:\nIt shows A dog.")
    assert out[0].finish_reasons == ["end_turn", "end_turn"]
    assert usage["total"]["usd"] > 0


def test_unknown_route_is_not_retried_and_names_the_generator(tmp_path, server):
    gens = {"g": {"provider": "openai", "model": "fake", "base_url": f"http://127.0.0.1:{server.port}/nope"}}
    with session({"generators": gens}, tmp_path) as s, pytest.raises(
            GenerationError, match=r"generator g \(openai fake\) in step task:t: HTTP 404"):
        s.client("g").run([Request(messages=_msgs("x"))], step="task:t")
    assert len(server.log) == 0


@pytest.mark.slow
def test_build_survives_thirty_percent_faults_and_resends_no_completed_request(tmp_path, monkeypatch):
    from vlitc import api

    srv = FakeServer(fault_rate=0.3, hang=3.0, seed=3).start_in_thread()
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    recipe = demo_recipe("llava-instruct", tmp_path, srv.base_url, sample=12, timeout=0.5,
                         max_retries=30, on_error="fail")
    result = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    total = result.manifest["llm"]["total"]
    outcomes = Counter(r["outcome"] for r in srv.log)
    assert set(outcomes) == {"ok", "429", "500", "timeout", "malformed"}, outcomes
    assert total["samples"] == 36 and total["failed"] == 0 and total["retries"] > 0
    done = srv.completed()
    assert len(done) == len(set(done)) == 36  # every item answered once, none sent again


@pytest.mark.slow
def test_sigkill_mid_generation_then_rerun_resends_nothing_completed(tmp_path):
    srv = FakeServer(latency=0.02, hold_after=10).start_in_thread()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "_llm_util.py"), srv.base_url, str(tmp_path / "cache")]
    proc = subprocess.Popen([*cmd, str(tmp_path / "a.json"), "40"], env=env)
    deadline = time.monotonic() + 60
    while srv._ok < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the responses that arrived are committed; the rest hang on the server
    assert proc.poll() is None, "generation ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = srv.completed()
    assert 10 <= len(first) < 40  # requests already past the hold when it closed finish too
    srv.hold_after = None
    subprocess.run([*cmd, str(tmp_path / "a.json"), "40"], env=env, check=True, timeout=120)
    resumed = srv.completed()
    assert len(resumed) == len(set(resumed)) == 40  # nothing completed was sent again
    subprocess.run([sys.executable, str(ROOT / "tests" / "_llm_util.py"), srv.base_url,
                    str(tmp_path / "fresh"), str(tmp_path / "b.json"), "40"], env=env, check=True,
                   timeout=120)
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert len(a) == 80 and a == b  # identical to an uninterrupted build
