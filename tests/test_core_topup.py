"""Balance top-up: a generated task that falls short after filtering generates only the missing
items, from its observed pass rate, in a second round."""

from __future__ import annotations

import json

import yaml
from _core_util import demo_copy

from vlitc.api import build

QA = "Question:\nWhat shape is shown?\n===\nAnswer:\nA coloured shape, item {{ index }}."


def _recipe(tmp_path, topup: int):
    path = demo_copy(tmp_path)
    r = yaml.safe_load(path.read_text())
    r["generators"] = {"m": {"provider": "mock", "model": "mock-1", "template": QA}}
    r["tasks"] = {"brief_caption": r["tasks"]["brief_caption"],
                  "conv": {"kind": "generate", "source": "coco", "generator": "m",
                           "prompt": "llava/conversation", "limit": 4}}
    r["balance"] = {"total": 40, "mix": {"brief_caption": 0.5, "conv": 0.5}, "topup": topup}
    r["outputs"] = [{"format": "sharegpt", "path": "all.jsonl"}]
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def _tasks(out):
    rows = [json.loads(x) for x in (out / "all.jsonl").read_text().splitlines()]
    return [r.get("task") or r["id"].split("/")[0] for r in rows]


def test_without_topup_the_shortfall_is_reported(tmp_path):
    res = build(_recipe(tmp_path, 0), out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    assert _tasks(tmp_path / "o").count("conv") == 4
    assert not [e for e in res.events if e.get("event") == "topup"]


def test_topup_generates_only_the_missing_items(tmp_path):
    res = build(_recipe(tmp_path, 1), out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    topups = [e for e in res.events if e.get("event") == "topup"]
    assert topups == [{"event": "topup", "step": "balance", "items": {"task:conv": 16}}]
    assert _tasks(tmp_path / "o").count("conv") == 20
    store = (tmp_path / "o" / "llm_responses.jsonl").read_text().splitlines()
    assert len(store) == 20  # 4 in the first round, 16 new ones in the top-up, none twice
    again = build(_recipe(tmp_path, 1), out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    assert all(s["status"] == "cached" for s in again.manifest["steps"])


def test_plan_estimates_the_calls_of_a_stale_generated_task(tmp_path, capsys, monkeypatch):
    from vlitc.cli.main import main

    recipe = _recipe(tmp_path, 0)
    assert main(["build", str(recipe), "--quiet", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    recipe.write_text(recipe.read_text().replace("limit: 4", "limit: 5"))
    capsys.readouterr()
    assert main(["plan", str(recipe), "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["steps"]}
    conv = rows["task:conv"]
    assert conv["status"] == "stale" and conv["reasons"] == ["params_changed: limit"]
    # the response cache holds the first four items' answers: only the fifth is paid for
    assert conv["items"] == {"new": 1, "changed": 0, "cached": 4}
    assert conv["estimate"]["calls"] == 1 and not conv["estimate"].get("per_item")
    # a step with more inputs than the plan looks at one by one is counted whole, and says so
    monkeypatch.setattr("vlitc.run.items.MAX_ITEMS", 3)
    assert main(["plan", str(recipe), "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    conv = {r["id"]: r for r in json.loads(capsys.readouterr().out)["steps"]}["task:conv"]
    assert "items" not in conv and "more than the 3" in conv["items_unknown"]
    assert conv["estimate"]["calls"] == 5
