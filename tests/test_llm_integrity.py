"""What a shared cache and a real API must not do to a build: run code from a planted cache entry,
pay twice when two builds share one cache, overshoot the budget with the requests in flight, or
leave tracebacks and lost work behind on Ctrl-C and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import pytest
import yaml

from tests._llm_util import ROOT, demo_recipe
from vlitc import api
from vlitc.errors import BudgetExceeded
from vlitc.llm import Request, session
from vlitc.llm.fakeserver import FakeServer

DEMO = ROOT / "recipes" / "data" / "demo"


class Planted:
    """A pickle payload: unpickling it creates ``path`` (it calls ``open(path, "w")``)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def mock_recipe(tmp_path: Path) -> Path:
    """Generated conversations judged by a model, both from the mock provider, on demo scenes."""
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    src = data["sources"]["coco"]
    src.update(images=str(DEMO / "images"), captions=str(DEMO / "annotations/captions_demo.json"),
               instances=str(DEMO / "annotations/instances_demo.json"), sample=3)
    data["sources"] = {"coco": src}
    data["generators"] = {"m": {"provider": "mock", "template": (
        "{% if 'VERDICT' in system %}All fine.\nVERDICT: correct{% else %}"
        "Question:\nWhat is shown?\n===\nAnswer:\nShapes.{% endif %}")}}
    data["tasks"] = {"conv": {"kind": "generate", "source": "coco", "generator": "m",
                              "prompt": "llava/conversation"}}
    data["filters"] = [{"type": "judge", "generator": "m", "votes": 1, "tie": "keep"}]
    for k in ("balance", "pools"):
        data.pop(k, None)
    data["outputs"] = [{"format": "llava", "path": "train.json"}]
    path = tmp_path / "mock.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_pickle_planted_in_any_cache_store_is_never_loaded(tmp_path):
    recipe, cache = mock_recipe(tmp_path), tmp_path / "cache"
    first = api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache)
    assert first.manifest["llm"]["total"]["calls"] > 0
    exported = (tmp_path / "out" / "train.json").read_bytes()
    marker = tmp_path / "pwned"
    stores = sorted({p.parent for p in cache.rglob("cache.db")})
    assert any(s.name == "llm" for s in stores) and any("measure-judge" in str(s) for s in stores)
    planted = 0
    for store in stores:  # every entry of every diskcache store becomes the payload
        with diskcache.Cache(str(store)) as dc:
            for key in list(dc.iterkeys()):
                dc.set(key, Planted(marker))
                planted += 1
    assert planted > 0
    again = api.build(recipe, out_dir=tmp_path / "out", cache_dir=cache, force=("all",))
    assert not marker.exists()
    usage = again.manifest["llm"]
    assert usage["total"]["calls"] == first.manifest["llm"]["total"]["calls"]  # asked again
    assert any("not JSON" in w for w in usage["warnings"])
    assert (tmp_path / "out" / "train.json").read_bytes() == exported


@pytest.mark.slow
def test_two_builds_on_one_cache_send_each_request_once(tmp_path):
    srv = FakeServer(latency=0.15).start_in_thread()
    recipe = demo_recipe("llava-instruct", tmp_path, srv.base_url, sample=6, max_concurrency=8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLITC_TEST_KEY": "k"}
    procs = [subprocess.Popen([sys.executable, "-m", "vlitc.cli.main", "build", str(recipe),
                               "--out", str(tmp_path / f"out{i}"), "--cache-dir", str(tmp_path / "cache"),
                               "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    bodies = [r["body_sha256"] for r in srv.log]
    assert len(bodies) == len(set(bodies)) == 6 * 3  # 6 images x 3 tasks, each sent once
    a, b = (json.loads((tmp_path / f"out{i}" / "manifest.json").read_text()) for i in range(2))
    assert a["llm"]["total"]["calls"] + b["llm"]["total"]["calls"] == len(bodies)
    assert a["outputs"] == b["outputs"]  # the same bytes, whoever sent what


def test_a_lease_left_by_a_killed_process_is_taken_over(tmp_path):
    from vlitc.llm.cache import ResponseCache

    held = ResponseCache(tmp_path)
    held.claim(["k1", "k2"])
    held.close()  # the lease outlives its session, as after kill -9 ...
    other = ResponseCache(tmp_path)
    assert other.claim(["k1"]) == frozenset()  # ... and a live process still holds it
    db = other._lease_db()
    db.set("k1", {**db.get("k1"), "pid": _dead_pid()}, expire=30)  # its process is gone
    assert other.claim(["k1", "k2"]) == {"k1"}
    other.close()


def test_leases_are_taken_only_while_another_session_uses_the_cache(tmp_path):
    from vlitc.llm.cache import ResponseCache

    a = ResponseCache(tmp_path)
    assert a.shared(force=True) is False  # alone: sends without leases
    b = ResponseCache(tmp_path)
    assert b.shared(force=True) is True and a.shared(force=True) is True
    b.close()  # gone: a is alone again
    assert a.shared(force=True) is False
    a.close()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_budget_holds_with_32_requests_in_flight(tmp_path):
    srv = FakeServer(latency=0.2).start_in_thread()
    gens = {"g": {"provider": "openai", "model": "fake", "base_url": srv.base_url,
                  "max_concurrency": 32, "max_tokens": 64, "prices": {"input": 1000, "output": 1000}}}
    reqs = [Request(messages=[{"role": "user", "content": f"Describe scene {i}."}]) for i in range(200)]
    with session({"generators": gens, "budget": {"max_usd": 1.0}}, tmp_path) as s:
        with pytest.raises(BudgetExceeded, match="max_usd 1.0"):
            s.client("g").run(reqs, step="task:t")
        total = s.usage()["total"]
    one = total["usd"] / total["calls"]
    assert total["usd"] <= 1.0 and total["calls"] == len(srv.log)
    assert 1.0 - total["usd"] < 3 * one  # it stopped near the budget, not far below it
    assert total["calls"] > 8


@pytest.mark.slow
def test_sigint_and_sigterm_stop_cleanly_and_the_next_build_resumes(tmp_path):
    srv = FakeServer(latency=0.02, hold_after=6).start_in_thread()
    recipe = demo_recipe("llava-instruct", tmp_path, srv.base_url, sample=8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLITC_TEST_KEY": "k"}
    cmd = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--out",
           str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    for sig, code, word in ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")):
        # the build starts with Ctrl-C's usual handling even where this run was started with
        # SIGINT ignored (a background job of a script), which the build would inherit
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        deadline = time.monotonic() + 120
        while not any(r["outcome"] == "held" for r in srv.log) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert f"{word}; finished work is cached" in err
        for bad in ("Traceback", "Task was destroyed", "Exception ignored", "Error"):
            assert bad not in err + out, err
        srv.hold_after = srv._ok + 6
        srv.log[:] = [r for r in srv.log if r["outcome"] != "held"]
    srv.hold_after = None
    done = subprocess.run(cmd + ["--quiet"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    completed = srv.completed()
    assert len(completed) == len(set(completed)) == 8 * 3  # nothing completed was sent again


def test_a_large_value_is_stored_as_the_json_text_diskcache_reads_and_a_bad_file_is_a_miss(tmp_path):
    """A value larger than a row holds goes into a file of its UTF-8 JSON text, as diskcache's
    own text values do (diskcache's reader gives back that text); a value file planted with
    bytes that are not JSON (nor UTF-8) is refused, not a crash."""
    import orjson

    from vlitc.diskstore import open_cache, refused

    value = {f"images/{i:06d}.jpg": [1000 + i, 17 * i, "caf\u00e9 " * 3, None] for i in range(4000)}
    with open_cache(tmp_path / "s") as store:
        store.set("table", value)
        store.set("small", {"a": 1})
        assert store.get("table") == value and store.get("small") == {"a": 1}
    with diskcache.Cache(str(tmp_path / "s")) as plain:  # diskcache's own reader: the same text
        assert orjson.loads(plain.get("table")) == value
        files = [p for p in (tmp_path / "s").rglob("*.val")]
    assert len(files) == 1 and files[0].read_bytes() == orjson.dumps(value)
    files[0].write_bytes(b"\xff\xfe not json")
    with open_cache(tmp_path / "s") as store:
        assert store.get("table") is None and refused(store) == 1
        files[0].unlink()
        assert store.get("table") is None  # a value file that is gone: a miss
