"""docs/your-own-data.md: each recipe it shows builds as shipped, into releases the trainers read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_exporters_trainers import internvl_read, llamafactory_read

from vlitc.api import build

RECIPES = ("own-coco", "own-llava", "own-images")


def test_the_page_shows_each_shipped_recipe(repo_root):
    page = (repo_root / "docs" / "your-own-data.md").read_text(encoding="utf-8")
    for name in RECIPES:
        assert f"recipes/{name}.yaml" in page
        assert (repo_root / "recipes" / f"{name}.yaml").is_file()
    assert "docs/your-own-data.md" in (repo_root / "README.md").read_text(encoding="utf-8")


def _build(tmp_path, repo_root, name, edit=None):
    # the recipe as shipped, with its data beside it (paths are relative to the recipe)
    shutil.copytree(repo_root / "recipes" / "data", tmp_path / "data")
    recipe = tmp_path / f"{name}.yaml"
    text = (repo_root / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")
    recipe.write_text(edit(text) if edit else text, encoding="utf-8")
    out = tmp_path / "release"
    result = build(recipe, out_dir=out, cache_dir=tmp_path / "cache")
    return result, out


def test_own_coco_builds_for_llamafactory_trl_and_the_hub(tmp_path, repo_root):
    datasets = pytest.importorskip("datasets")
    result, out = _build(tmp_path, repo_root, "own-coco")
    rows = llamafactory_read(out / "llamafactory", "own-coco")
    assert len(rows) == result.manifest["steps"][-2]["n_in"] > 0
    answers = [r["response"][0]["content"] for r in rows]
    assert any(re.fullmatch(r"<ref>[^<]+</ref><box>\(\d+,\d+\),\(\d+,\d+\)</box>", a)
               for a in answers)  # the rec task in Qwen-VL's grounding syntax
    lines = [json.loads(x) for x in (out / "messages.jsonl").read_text().splitlines()]
    assert all("<image>" not in p.get("text", "") for r in lines for m in r["messages"]
               for p in m["content"])
    pq = datasets.load_dataset("parquet", data_files=str(out / "train.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert pq.features["image"] == datasets.Image() and pq[0]["image"].size == (160, 120)
    # the card says where each export's images are, as its trainer finds them
    card = (out / "README.md").read_text()
    assert ("Images in `llamafactory/train.jsonl`: paths relative to the data file's own folder, "
            "into the release's `llamafactory/images/` folder") in card
    assert "Images in `train.parquet`: the pictures themselves" in card
    assert "Images in `messages.jsonl`: absolute paths of the source images" in card
    assert all(Path(p).is_absolute() and Path(p).is_file() for r in lines for p in r["images"])


def test_own_llava_joins_the_file_with_coco_and_builds_for_internvl(tmp_path, repo_root):
    _, out = _build(tmp_path, repo_root, "own-llava")
    items = internvl_read(out, out / "internvl_meta.json")
    # the inner join keeps the three images the LLaVA file names
    assert {i["image"] for i in items} == {"000000000001.png", "000000000002.png",
                                           "000000000003.png"}
    assert {i["id"].split("/")[0] for i in items} == {"caption", "existence"}


def test_own_images_has_a_vision_model_describe_each_picture(tmp_path, repo_root, monkeypatch):
    from vlitc.llm.fakeserver import FakeServer

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    server = FakeServer().start_in_thread()
    # the recipe's pool file is ../prompt_templates/..., as from recipes/
    shutil.copytree(repo_root / "prompt_templates" / "pools", tmp_path / "prompt_templates" / "pools")

    def on_loopback(text: str) -> str:
        return text.replace("http://127.0.0.1:8000/v1", server.base_url)

    tmp = tmp_path / "r"
    tmp.mkdir()
    _, out = _build(tmp, repo_root, "own-images", on_loopback)
    rows = llamafactory_read(out, "own-images")
    n_images = len(list((repo_root / "recipes" / "data" / "demo" / "images").glob("*.png")))
    assert len(rows) == n_images and all(len(r["images"]) == 1 for r in rows)
    assert len([r for r in server.log if r.get("images")]) == n_images  # each picture sent once
