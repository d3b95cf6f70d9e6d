"""End to end: the demo recipe builds a release that trainers load, byte-identical on rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests._release_util import demo_recipe_data, llava_reader
from vlitc.api import build
from vlitc.ops.exporters.validate import validate_llava_file
from vlitc.release.diff import diff_releases, is_identical


def _recipe(tmp_path: Path, repo_root: Path, response: bool = False) -> Path:
    """The demo recipe with absolute data paths, a balance with a split, and three formats."""
    r = demo_recipe_data(repo_root)
    r["balance"] = {"type": "mix", "total": 60, "mix": {"brief_caption": 0.5, "object_box": 0.5},
                    "per_image_cap": 4, "split": {"validation": 0.2}}
    r["outputs"] = [{"format": "llava", "path": "train.json", "split": "train"},
                    {"format": "llava", "path": "validation.json", "split": "validation"},
                    {"format": "sharegpt", "path": "all.jsonl"},
                    {"format": "parquet", "path": "data/train.parquet", "split": "train"}]
    r["report"] = {"type": "release", "gallery": 4, "indicators": {"response": response}}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


@pytest.fixture
def release(tmp_path, repo_root):
    if not (repo_root / "recipes/data/demo/images").is_dir():
        pytest.skip("demo data not generated")
    recipe = _recipe(tmp_path, repo_root)
    build(recipe, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache1")
    return recipe, tmp_path / "one"


def test_two_builds_in_fresh_caches_are_byte_identical(release, tmp_path):
    recipe, one = release
    build(recipe, out_dir=tmp_path / "two", cache_dir=tmp_path / "cache2")
    a, b = _files(one), _files(tmp_path / "two")
    assert sorted(a) == ["README.md", "all.jsonl", "data/train.parquet", "drops.jsonl", "indicators.json",
                         "report.html", "train.json", "validation.json", "vlitc.lock"]
    assert a == b
    assert is_identical(diff_releases(one, tmp_path / "two"))


def test_frozen_rebuild_makes_no_call_and_same_bytes(release, tmp_path):
    recipe, one = release
    result = build(recipe, out_dir=tmp_path / "frozen", cache_dir=tmp_path / "cache3", frozen=True)
    assert result.manifest.get("llm", {}).get("calls", 0) == 0
    assert _files(tmp_path / "frozen") == _files(one)


def test_release_llava_json_validates_and_reads_like_llava(release, tmp_path, repo_root):
    _, out = release
    folder = repo_root / "recipes/data/demo/images"  # every source reads this one folder
    n_train = validate_llava_file(out / "train.json", folder)
    n_val = validate_llava_file(out / "validation.json", folder)
    assert n_train + n_val == 60
    train = {r["image"] for r in json.loads((out / "train.json").read_text())}
    val = {r["image"] for r in json.loads((out / "validation.json").read_text())}
    assert not train & val  # split by image
    items = llava_reader(out / "train.json", folder)
    assert all(i["n_image_tokens"] == 1 for i in items)


def test_release_loads_with_datasets_json_and_parquet(release, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, out = release
    cache = str(tmp_path / "hf")
    js = datasets.load_dataset("json", data_files=str(out / "train.json"), split="train",
                               cache_dir=cache)
    pq = datasets.load_dataset("parquet", data_files=str(out / "data/train.parquet"),
                               split="train", cache_dir=cache)
    assert js.num_rows == pq.num_rows > 0
    assert js["id"] == pq["id"]
    assert set(pq["split"]) == {"train"}
    card = (out / "README.md").read_text()
    assert "| brief_caption | 30 |" in card and "| object_box | 30 |" in card
