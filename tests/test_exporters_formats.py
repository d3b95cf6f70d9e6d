"""Exporters write LLaVA JSON, messages JSONL and Parquet that trainers and `datasets` load."""

from __future__ import annotations

import json
import os

import pytest

from tests._release_util import context, demo_samples, llava_reader
from vlitc.errors import ConfigurationError
from vlitc.ops.exporters.llava import LlavaExporter
from vlitc.ops.exporters.parquet import ParquetExporter
from vlitc.ops.exporters.sharegpt import ShareGptExporter
from vlitc.ops.exporters.validate import validate_llava_file


def test_llava_json_shape_image_token_and_no_image_key_on_text_only(tmp_path):
    ctx = context(tmp_path)
    written = LlavaExporter({"path": "train.json"}).export(demo_samples(tmp_path), ctx)
    assert written == ["train.json"]
    data = json.loads((ctx.out_dir / "train.json").read_text())
    assert [r["id"] for r in data] == ["caption/a/0", "conv/b/0", "caption/c/0", "text/0"]
    assert data[0] == {"id": "caption/a/0", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image briefly."},
        {"from": "gpt", "value": "A red square."}]}
    assert [c["from"] for c in data[1]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert "image" not in data[3]
    assert "<image>" not in data[3]["conversations"][0]["value"]


def test_llava_export_reads_back_like_llava_training_code(tmp_path):
    ctx = context(tmp_path)
    LlavaExporter({"path": "train.json"}).export(demo_samples(tmp_path), ctx)
    items = llava_reader(ctx.out_dir / "train.json", tmp_path / "images" / "coco")
    assert [i["has_image"] for i in items] == [True, True, True, False]
    assert [i["n_image_tokens"] for i in items] == [1, 1, 1, 0]


def test_llava_export_with_copied_images_passes_file_validation(tmp_path):
    ctx = context(tmp_path)
    written = LlavaExporter({"path": "data/train.json", "images": "copy", "image_dir": "images"}) \
        .export(demo_samples(tmp_path), ctx)
    assert written == ["data/train.json", "images/a.png", "images/b.png", "images/c.png"]
    assert validate_llava_file(ctx.out_dir / "data/train.json", ctx.out_dir / "images") == 4
    assert len(llava_reader(ctx.out_dir / "data/train.json", ctx.out_dir / "images")) == 4


def test_link_mode_hard_links_images(tmp_path):
    ctx = context(tmp_path)
    LlavaExporter({"path": "t.json", "images": "link"}).export(demo_samples(tmp_path), ctx)
    src, dst = tmp_path / "images/coco/a.png", ctx.out_dir / "images/a.png"
    assert os.stat(src).st_ino == os.stat(dst).st_ino or ctx.counters.get("link_fallback_copy")


def test_split_param_selects_train_or_validation(tmp_path):
    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    LlavaExporter({"path": "train.json", "split": "train"}).export(samples, ctx)
    LlavaExporter({"path": "val.json", "split": "validation"}).export(samples, ctx)
    train = {r["id"] for r in json.loads((ctx.out_dir / "train.json").read_text())}
    val = {r["id"] for r in json.loads((ctx.out_dir / "val.json").read_text())}
    assert val == {"caption/c/0"} and train == {"caption/a/0", "conv/b/0", "text/0"}


def test_shard_size_writes_numbered_shards(tmp_path):
    ctx = context(tmp_path)
    written = ShareGptExporter({"path": "train.jsonl", "shard_size": 3}) \
        .export(demo_samples(tmp_path), ctx)
    assert written == ["train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl"]
    lines = [(ctx.out_dir / p).read_text().splitlines() for p in written]
    assert [len(x) for x in lines] == [3, 1]


@pytest.mark.exercises("exporter.sharegpt")
def test_sharegpt_jsonl_has_roles_and_images_list(tmp_path):
    ctx = context(tmp_path)
    ShareGptExporter({"path": "train.jsonl"}).export(demo_samples(tmp_path), ctx)
    rows = [json.loads(x) for x in (ctx.out_dir / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "caption/a/0", "images": ["a.png"], "messages": [
        {"role": "user", "content": "<image>\nDescribe the image briefly."},
        {"role": "assistant", "content": "A red square."}]}
    assert rows[3]["images"] == []
    for r in rows:
        n_ph = sum(m["content"].count("<image>") for m in r["messages"])
        assert n_ph == len(r["images"])


def test_json_and_parquet_exports_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    LlavaExporter({"path": "train.json"}).export(samples, ctx)
    ParquetExporter({"path": "train.parquet"}).export(samples, ctx)
    cache = str(tmp_path / "hf")
    js = datasets.load_dataset("json", data_files=str(ctx.out_dir / "train.json"),
                               cache_dir=cache, split="train")
    pq = datasets.load_dataset("parquet", data_files=str(ctx.out_dir / "train.parquet"),
                               cache_dir=cache, split="train")
    assert js.num_rows == pq.num_rows == 4
    assert pq[1]["conversations"][2] == {"from": "human", "value": "Is it bright?"}
    assert pq[3]["image"] is None and js[3]["image"] is None
    assert pq["split"] == ["train", "train", "validation", "train"]
    assert js[0]["conversations"] == pq[0]["conversations"]


@pytest.mark.parametrize("cls,path", [(LlavaExporter, "x.json"), (ShareGptExporter, "x.jsonl"),
                                      (ParquetExporter, "x.parquet")])
def test_exports_are_byte_identical_across_builds(tmp_path, cls, path):
    samples = demo_samples(tmp_path)
    blobs = []
    for run in ("one", "two"):
        ctx = context(tmp_path)
        ctx.out_dir = tmp_path / run
        ctx.out_dir.mkdir()
        cls({"path": path, "shard_size": 2}).export(samples, ctx)
        blobs.append({p.name: p.read_bytes() for p in sorted(ctx.out_dir.iterdir())})
    assert blobs[0] == blobs[1] and len(blobs[0]) == 2


def test_output_path_outside_release_is_a_configuration_error(tmp_path):
    ctx = context(tmp_path)
    with pytest.raises(ConfigurationError, match="relative path inside the release"):
        LlavaExporter({"path": "../escape.json"}).export(demo_samples(tmp_path), ctx)
