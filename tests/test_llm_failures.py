"""Ops that call a model share one failure policy: ``on_error: fail`` stops the build naming the
item, ``on_error: skip`` goes on and names the items it left out (summary, manifest, card), a
failure is never cached as a result, and the next build retries exactly the failed items."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from vlitc import api
from vlitc.cli.main import main
from vlitc.errors import GenerationError
from vlitc.llm.fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "data" / "demo"


def judge_recipe(tmp_path: Path, url: str, on_error: str) -> Path:
    """Brief captions of the demo scenes, judged by an OpenAI-compatible server at ``url``."""
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    src = data["sources"]["coco"]
    src.update(images=str(DEMO / "images"), captions=str(DEMO / "annotations/captions_demo.json"),
               instances=str(DEMO / "annotations/instances_demo.json"), sample=3)
    data["sources"] = {"coco": src}
    data["tasks"] = {"brief_caption": data["tasks"]["brief_caption"]}
    data.pop("balance", None)
    data["outputs"] = [{"format": "llava", "path": "train.json"}]
    data["generators"] = {"judge": {"provider": "openai", "model": "fake", "base_url": url,
                                    "api_key_env": "VLITC_TEST_KEY", "max_retries": 0,
                                    "retry_backoff": 0.0, "on_error": on_error}}
    data["filters"] = [{"type": "judge", "generator": "judge", "votes": 1, "tie": "keep"}]
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sent(srv: FakeServer, since: int = 0) -> Counter:
    return Counter(r["outcome"] for r in srv.log[since:])


def test_a_judge_whose_server_fails_stops_the_build_by_default_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer(fault_rate=1.0, faults=("500",)).start_in_thread()
    recipe = judge_recipe(tmp_path, srv.base_url, "fail")
    cache, out = tmp_path / "cache", tmp_path / "out"
    with pytest.raises(GenerationError, match=r"judge: generator judge \(openai fake\): .*HTTP 500.*item "):
        api.build(recipe, out_dir=out, cache_dir=cache)
    failed = sent(srv)["500"]
    assert failed > 0 and not (out / "manifest.json").exists()
    srv.fault_rate = 0.0
    mark = len(srv.log)
    result = api.build(recipe, out_dir=out, cache_dir=cache)
    steps = {s["id"]: s for s in result.manifest["steps"]}
    n = steps["measure:judge"]["n_in"]
    assert sent(srv, mark) == {"ok": n}  # every judged sample now, once
    assert steps["filter:judge"]["n_dropped"] == 0 and "failed" not in steps["measure:judge"]


def test_skipped_failures_are_named_and_exactly_they_are_retried_next_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    srv = FakeServer(fault_rate=0.4, faults=("500",), seed=5).start_in_thread()
    recipe = judge_recipe(tmp_path, srv.base_url, "skip")
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["build", str(recipe), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(argv) == 0
    failed_bodies = {r["body_sha256"] for r in srv.log if r["outcome"] == "500"}
    first_ok = {r["body_sha256"] for r in srv.log if r["outcome"] == "ok"}
    assert failed_bodies and first_ok
    # the summary, the manifest and the card name the items left out
    err = capsys.readouterr().err
    assert f"measure:judge: {len(failed_bodies)} item(s) left out after failed model calls" in err
    manifest = json.loads((out / "manifest.json").read_text())
    step = next(s for s in manifest["steps"] if s["id"] == "measure:judge")
    assert step["failed"]["count"] == len(failed_bodies)
    items = [i["item"] for i in step["failed"]["items"]]
    assert len(items) == len(failed_bodies) and all("HTTP 500" in i["error"] for i in step["failed"]["items"])
    assert items[0] in err
    drop = next(s for s in manifest["steps"] if s["id"] == "filter:judge")
    assert drop["n_dropped"] == len(failed_bodies)
    # the server is healthy again: the next build sends exactly the requests that failed
    srv.fault_rate = 0.0
    mark = len(srv.log)
    assert main(argv) == 0
    again = [r for r in srv.log[mark:]]
    assert {r["body_sha256"] for r in again} == failed_bodies and len(again) == len(failed_bodies)
    manifest = json.loads((out / "manifest.json").read_text())
    steps = {s["id"]: s for s in manifest["steps"]}
    assert "failed" not in steps["measure:judge"] and steps["filter:judge"]["n_dropped"] == 0
    assert steps["measure:judge"]["counters"]["measured"] == len(failed_bodies)
    # only real verdicts were cached: a forced rebuild measures nothing and sends nothing
    mark = len(srv.log)
    assert main([*argv, "--force", "all"]) == 0
    steps = {s["id"]: s for s in json.loads((out / "manifest.json").read_text())["steps"]}
    assert len(srv.log) == mark and "measured" not in steps["measure:judge"]["counters"]


def test_the_card_names_items_left_out(tmp_path, monkeypatch):
    from vlitc.release import card

    text = card.render({
        "name": "x", "version": "1", "seed": 1, "n_samples": 1, "description": "",
        "counts": {"task": {}, "task_source": {}, "split": {}}, "sources": [], "generators": [],
        "funnel": [], "drop_reasons": {}, "indicator_rows": [], "outputs": [], "image_note": "",
        "rebuild": "vlitc build", "failed": [{"step": "task:conv", "count": 2, "items": [
            {"item": "39769", "error": "generator g: sample 0: HTTP 500"},
            {"item": "139", "error": "generator g: sample 0: HTTP 500"}]}]})
    assert "## Failed model calls" in text and "2 item(s) are missing" in text
    assert "| task:conv | 39769 | generator g: sample 0: HTTP 500 |" in text


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_generate_rewrite_and_pool_expansion_share_the_policy(tmp_path, on_error):
    from tests._llm_util import RECORD
    from vlitc.llm import session
    from vlitc.ops.base import OpContext
    from vlitc.ops.registry import get

    gens = {"m": {"provider": "mock", "retry_backoff": 0.0, "max_retries": 0, "on_error": on_error,
                  "fail": {"rate": 1.0, "status": 503, "attempts": 0}}}
    ops = [
        ("task:conv", get("task", "generate")({"source": "coco", "generator": "m",
                                                "prompt": "llava/conversation"}, label="conv"),
         lambda op, ctx: list(op.run([RECORD], ctx))),
        ("task:rw", get("task", "rewrite")({"task": ["conv"], "generator": "m"}, label="rw"),
         lambda op, ctx: list(op.run(ctx.input("task:conv"), ctx))),
        ("pool:more", get("pool", "expand")({"seeds": ["Describe the image."], "generator": "m",
                                             "n": 2}, label="more"),
         lambda op, ctx: op.templates(ctx)),
    ]
    sample = {"id": "conv/1/0", "task": "conv", "turns": [{"role": "user", "content": "q"},
                                                           {"role": "assistant", "content": "a"}]}
    for step, op, call in ops:
        with session({"generators": gens}, tmp_path / "llm") as s:
            ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id=step, generators=gens,
                            _client=s.client, _inputs=lambda ref: iter([sample]))
            if on_error == "fail" or step.startswith("pool"):
                with pytest.raises(GenerationError, match="HTTP 503"):
                    call(op, ctx)
            else:
                assert call(op, ctx) == []
            if on_error == "skip":
                assert ctx.counters["llm_failed"] >= 1
                assert "HTTP 503" in ctx.notes["llm_failed"][0]["error"]
