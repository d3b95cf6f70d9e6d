"""A release carries the LLM responses it used: a frozen rebuild from it makes no call and gives
the same bytes; when inputs changed, it says exactly what differs."""

from __future__ import annotations

import json

import yaml
from _core_util import demo_copy, ran

from vlitc.api import build, frozen_rebuild
from vlitc.cli.main import main

QA = "Question:\nWhat shape is shown?\n===\nAnswer:\nA {{ 'coloured' }} shape, seen in item {{ index }}."


def _with_generation(tmp_path):
    path = demo_copy(tmp_path)
    r = yaml.safe_load(path.read_text())
    r["generators"] = {"m": {"provider": "mock", "model": "mock-1", "template": QA}}
    r["tasks"]["conv"] = {"kind": "generate", "source": "coco", "generator": "m",
                          "prompt": "llava/conversation"}
    r["balance"]["mix"] = {"brief_caption": 0.5, "conv": 0.5}
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def _files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "manifest.json"}


def test_release_carries_the_responses_and_a_frozen_rebuild_makes_no_call(tmp_path):
    recipe = _with_generation(tmp_path)
    first = build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    store = tmp_path / "rel" / "llm_responses.jsonl"
    lines = store.read_text().splitlines()
    assert len(lines) == 24 and all("key" in json.loads(x) for x in lines)
    assert any(o["path"] == "llm_responses.jsonl" for o in first.manifest["outputs"])
    # a fresh cache and frozen: every response must come from the release's store
    again, diffs = frozen_rebuild(recipe, tmp_path / "rel", out_dir=tmp_path / "re",
                                  cache_dir=tmp_path / "c2")
    assert diffs == []
    assert "task:conv" in ran(again)
    assert again.manifest["llm"]["frozen"] is True
    assert _files(tmp_path / "re") == _files(tmp_path / "rel")


def test_frozen_rebuild_says_what_differs_and_exits_2(tmp_path, capsys):
    recipe = _with_generation(tmp_path)
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    recipe.write_text(recipe.read_text().replace("Give a short caption", "Give a brief caption"))
    code = main(["build", str(recipe), "--frozen-from", str(tmp_path / "rel"), "--quiet",
                 "--out", str(tmp_path / "re"), "--cache-dir", str(tmp_path / "c2")])
    err = capsys.readouterr().err
    assert code == 2
    assert "frozen rebuild differs from the release" in err
    assert "train.json: bytes differ" in err
    assert "vlitc.lock: " in err


def test_frozen_build_with_a_missing_response_fails_cleanly(tmp_path, capsys):
    recipe = _with_generation(tmp_path)
    code = main(["build", str(recipe), "--frozen", "--quiet", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "frozen build" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_an_expanded_pool_is_written_into_the_release_and_can_be_frozen(tmp_path):
    path = demo_copy(tmp_path)
    r = yaml.safe_load(path.read_text())
    r["generators"] = {"para": {"provider": "mock", "model": "mock-1", "responses": [
        "1. Describe the picture in a few words.\n2. Give a brief summary of this image."]}}
    r["pools"]["more"] = {"type": "expand", "seeds": {"pool": "brief"}, "generator": "para",
                          "n": 2, "include_seeds": False, "similarity": 1.0}
    r["tasks"]["brief_caption"]["instruction"] = {"pool": "more"}
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    first = build(path, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c")
    frozen = json.loads((tmp_path / "rel" / "pools" / "more.json").read_text())
    assert frozen == ["Describe the picture in a few words.", "Give a brief summary of this image."]
    # freeze it: a list pool over the released file builds the same samples with no generator
    r["pools"]["more"] = {"file": str(tmp_path / "rel" / "pools" / "more.json")}
    del r["generators"]
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    second = build(path, out_dir=tmp_path / "rel2", cache_dir=tmp_path / "c")
    train = [o for o in first.manifest["outputs"] if o["path"] == "train.json"]
    assert train == [o for o in second.manifest["outputs"] if o["path"] == "train.json"]
