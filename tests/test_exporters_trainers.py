"""Trainer exports (LLaMA-Factory, InternVL, HF/TRL messages) read back the way each trainer's
data loading reads them, field by field, and loaded with ``datasets`` with images decoded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from _release_util import context, demo_recipe_data, demo_samples, img, make_image

from vlitc.ops.exporters.trainers import (
    InternVLExporter,
    LlamaFactoryExporter,
    MessagesExporter,
    content_parts,
)
from vlitc.records import IMAGE_TOKEN, sample


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _several_images_exportable() -> bool:
    import vlitc.records

    return hasattr(vlitc.records, "images_of")  # samples with several images (issue 13)


def two_image_sample(tmp_path: Path) -> dict:
    make_image(tmp_path / "images" / "coco" / "d.png", color=(9, 9, 9))
    s = sample("pair/0", "pair", [
        {"role": "user", "content": "<image>\n<image>\nWhich of the two is darker?"},
        {"role": "assistant", "content": "The second one."}], source="coco",
        image=[img("a.png"), img("d.png")], meta={"split": "train"})
    return s


def llamafactory_read(dataset_dir: Path, name: str) -> list[dict]:
    """What LLaMA-Factory's loader does with a ``dataset_info.json`` entry in sharegpt formatting
    (data/parser.py + data/converter.py): the file under ``dataset_dir``, the column and tag
    names from the entry, role tags alternating user/assistant, an even message count, and
    each image joined onto ``media_dir`` (the dataset_dir by default) when that file exists."""
    info = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))[name]
    assert info["formatting"] == "sharegpt"
    cols, tags = info["columns"], info["tags"]
    files = info["file_name"] if isinstance(info["file_name"], list) else [info["file_name"]]
    out = []
    for f in files:
        for ex in _lines(dataset_dir / f):
            messages = ex[cols["messages"]]
            accept = ((tags["user_tag"],), (tags["assistant_tag"],))
            for i, m in enumerate(messages):
                assert m[tags["role_tag"]] in accept[i % 2], ex
            assert len(messages) % 2 == 0
            images = []
            for p in ex[cols["images"]]:
                joined = os.path.join(dataset_dir, p)
                assert os.path.isfile(joined), joined  # else LLaMA-Factory keeps a missing path
                images.append(joined)
            # the multimodal plugin's check: one <image> per image
            n_ph = sum(m[tags["content_tag"]].count(IMAGE_TOKEN) for m in messages)
            assert n_ph == len(images), ex
            out.append({"prompt": messages[:-1], "response": messages[-1:], "images": images})
    return out


@pytest.mark.parametrize("mode", ["copy", "reference"])
@pytest.mark.exercises("exporter.llamafactory")
def test_llamafactory_export_registers_itself_and_its_images_resolve(tmp_path, mode):
    ctx = context(tmp_path, recipe={"name": "demo"})
    samples = demo_samples(tmp_path)
    several = _several_images_exportable()
    if several:
        samples.append(two_image_sample(tmp_path))
    written = LlamaFactoryExporter({"path": "lf/train.jsonl", "images": mode}).export(samples, ctx)
    assert {"path": "lf/dataset_info.json", "records": None} in written
    info = json.loads((ctx.out_dir / "lf" / "dataset_info.json").read_text())
    assert info == {"demo": {
        "file_name": "train.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}}}
    rows = llamafactory_read(ctx.out_dir / "lf", "demo")
    assert len(rows) == 4 + several and rows[3]["images"] == []
    assert not several or len(rows[4]["images"]) == 2
    first = _lines(ctx.out_dir / "lf" / "train.jsonl")[0]["images"][0]
    assert first == ("../images/a.png" if mode == "copy"
                     else str((tmp_path / "images" / "coco" / "a.png").absolute()))


def test_llamafactory_split_export_names_its_dataset_by_the_split(tmp_path):
    ctx = context(tmp_path, recipe={"name": "demo"})
    LlamaFactoryExporter({"path": "val.jsonl", "split": "validation"}).export(
        demo_samples(tmp_path), ctx)
    assert list(json.loads((ctx.out_dir / "dataset_info.json").read_text())) == ["demo_validation"]
    assert len(llamafactory_read(ctx.out_dir, "demo_validation")) == 1


def internvl_read(release: Path, meta_file: Path) -> list[dict]:
    """What InternVL's fine-tuning data loading does with a meta file entry
    (internvl_chat_finetune.py, LazySupervisedDataset): read ``annotation`` line by line,
    ``os.path.join(root, image)`` for each image, ``conversations`` from human/gpt with one
    ``<image>`` per image, and ``length`` samples."""
    out = []
    for name, meta in json.loads(meta_file.read_text(encoding="utf-8")).items():
        assert meta["data_augment"] is False and meta["repeat_time"] == 1, name
        lines = (release / meta["annotation"]).read_text(encoding="utf-8").splitlines()
        assert meta["length"] == len(lines)
        for line in lines:
            item = json.loads(line)
            convs = item["conversations"]
            assert [c["from"] for c in convs] == ["human", "gpt"] * (len(convs) // 2)
            images = item.get("image")
            images = [] if images is None else images if isinstance(images, list) else [images]
            paths = [os.path.join(release, meta["root"], p) for p in images]
            assert all(os.path.isfile(p) for p in paths), paths
            assert sum(c["value"].count(IMAGE_TOKEN) for c in convs) == len(paths)
            out.append({**item, "paths": paths})
    return out


@pytest.mark.exercises("exporter.internvl")
def test_internvl_export_and_meta_file_read_as_its_training_reads_them(tmp_path):
    ctx = context(tmp_path, recipe={"name": "demo"})
    samples = demo_samples(tmp_path)
    several = _several_images_exportable()
    if several:
        samples.append(two_image_sample(tmp_path))
    InternVLExporter({"path": "internvl.jsonl", "images": "copy"}).export(samples, ctx)
    meta = json.loads((ctx.out_dir / "internvl_meta.json").read_text())
    assert meta == {"demo": {"root": "images/", "annotation": "internvl.jsonl",
                             "data_augment": False, "repeat_time": 1, "length": 4 + several}}
    items = internvl_read(ctx.out_dir, ctx.out_dir / "internvl_meta.json")
    assert items[0]["image"] == "a.png" and (items[0]["width"], items[0]["height"]) == (64, 48)
    assert "image" not in items[3]
    assert not several or (items[4]["image"] == ["a.png", "d.png"] and "width" not in items[4])


def test_content_parts_put_each_image_where_its_placeholder_stood():
    assert content_parts("<image>\nWhat is it?") == [{"type": "image"},
                                                     {"type": "text", "text": "What is it?"}]
    assert content_parts("Compare <image> and\n<image>\nplease.") == [
        {"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and"},
        {"type": "image"}, {"type": "text", "text": "please."}]
    assert content_parts("No image.") == [{"type": "text", "text": "No image."}]


@pytest.mark.exercises("exporter.messages")
def test_messages_export_has_content_lists_and_no_placeholder_text(tmp_path):
    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    several = _several_images_exportable()
    if several:
        samples.append(two_image_sample(tmp_path))
    assert MessagesExporter({"path": "chat.jsonl", "images": "copy"}).export(samples, ctx) == [
        "chat.jsonl", "images/a.png", "images/b.png", "images/c.png"] + ["images/d.png"] * several
    rows = _lines(ctx.out_dir / "chat.jsonl")
    assert rows[0]["messages"] == [
        {"role": "user", "content": [{"type": "image"},
                                     {"type": "text", "text": "Describe the image briefly."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}]
    for r in rows:
        parts = [p for m in r["messages"] for p in m["content"]]
        assert all(IMAGE_TOKEN not in p.get("text", "") for p in parts)
        assert sum(p["type"] == "image" for p in parts) == len(r["images"])
        assert all((ctx.out_dir / p).is_file() for p in r["images"])
    assert not several or rows[4]["images"] == ["images/a.png", "images/d.png"]


def test_messages_export_loads_with_datasets_and_decodes_its_images(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ctx = context(tmp_path)
    MessagesExporter({"path": "chat.jsonl", "images": "copy"}).export(demo_samples(tmp_path), ctx)
    monkeypatch.chdir(ctx.out_dir)  # image paths are relative to the data file's folder
    ds = datasets.load_dataset("json", data_files="chat.jsonl", split="train",
                               cache_dir=str(tmp_path / "hf"))
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image()))
    assert ds[0]["images"][0].size == (64, 48) and ds[3]["images"] == []
    assert ds[1]["messages"][2]["content"][0]["text"] == "Is it bright?"


@pytest.mark.slow  # importing TRL takes about ten seconds
def test_trl_prepares_the_messages_export(tmp_path, monkeypatch):
    """TRL's own data path for vision SFT (``prepare_multimodal_messages``, as its trainer calls
    it on each example) takes the export's rows, loaded with ``datasets``, as they are."""
    data_utils = pytest.importorskip("trl.data_utils", reason="TRL is in the trainers extra")
    datasets = pytest.importorskip("datasets")
    ctx = context(tmp_path)
    MessagesExporter({"path": "chat.jsonl", "images": "copy"}).export(demo_samples(tmp_path), ctx)
    monkeypatch.chdir(ctx.out_dir)
    ds = datasets.load_dataset("json", data_files="chat.jsonl", split="train",
                               cache_dir=str(tmp_path / "hf"))
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image()))
    assert data_utils.is_conversational(ds[0])
    for row in ds:
        messages = data_utils.prepare_multimodal_messages(row["messages"], row["images"])
        filled = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
        assert filled == row["images"]
        assert all(IMAGE_TOKEN not in (p.get("text") or "") for m in messages for p in m["content"])


def test_trainer_exports_build_from_a_recipe(tmp_path, repo_root):
    datasets = pytest.importorskip("datasets")
    r = demo_recipe_data(repo_root)
    r["outputs"] = [{"format": "llamafactory", "path": "llamafactory/train.jsonl", "images": "copy",
                     "image_dir": "llamafactory/images"},
                    {"format": "internvl", "path": "internvl.jsonl", "images": "copy"},
                    {"format": "messages", "path": "messages.jsonl"},
                    {"format": "parquet", "path": "train.parquet", "images": "embed"}]
    r["report"] = {"type": "release", "indicators": {"response": False}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    from vlitc.api import build

    out = tmp_path / "out"
    build(path, out_dir=out, cache_dir=tmp_path / "cache")
    n = len(llamafactory_read(out / "llamafactory", r["name"]))
    assert n == len(internvl_read(out, out / "internvl_meta.json")) == len(_lines(out / "messages.jsonl"))
    pq = datasets.load_dataset("parquet", data_files=str(out / "train.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert pq.num_rows == n and pq.features["image"] == datasets.Image()
    assert pq[0]["image"].size[0] > 0  # the picture itself, from the file's bytes
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert {"name": "image", "dtype": "image"} in front["dataset_info"]["features"]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "train.parquet"}]


@pytest.mark.exercises("exporter.parquet")
def test_parquet_embeds_image_bytes_as_the_datasets_image_feature(tmp_path):
    datasets = pytest.importorskip("datasets")
    from vlitc.ops.exporters.parquet import ParquetExporter

    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    # embedded, not copied: the file is the whole export
    assert ParquetExporter({"path": "t.parquet", "images": "embed"}).export(samples, ctx) == [
        "t.parquet"]
    ds = datasets.load_dataset("parquet", data_files=str(ctx.out_dir / "t.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["image"] == datasets.Image()
    assert ds[0]["image"].getpixel((0, 0)) == (255, 0, 0) and ds[3]["image"] is None
    raw = ds.cast_column("image", datasets.Image(decode=False))[1]["image"]
    assert raw["path"] == "b.png"
    assert raw["bytes"] == (tmp_path / "images" / "coco" / "b.png").read_bytes()
    # without embed: the path, as in the JSON exports, still typed for datasets
    ParquetExporter({"path": "u.parquet"}).export(samples, ctx)
    plain = datasets.load_dataset("parquet", data_files=str(ctx.out_dir / "u.parquet"),
                                  split="train", cache_dir=str(tmp_path / "hf"))
    assert plain.features["image"] == datasets.Value("string") and plain[0]["image"] == "a.png"


def test_two_llamafactory_exports_in_one_folder_share_one_dataset_info(tmp_path, repo_root):
    """A train and a validation export in one folder (LLaMA-Factory's `dataset` and
    `eval_dataset` from one `dataset_dir`): one dataset_info.json registers both; the images
    the exports (and a LLaVA export beside them) copy into one folder are written once."""
    from vlitc.api import build

    r = demo_recipe_data(repo_root)
    lf = {"format": "llamafactory", "images": "copy", "image_dir": "lf/images"}
    r["outputs"] = [{**lf, "path": "lf/train.jsonl", "split": "train"},
                    {**lf, "path": "lf/val.jsonl", "split": "validation"},
                    {"format": "llava", "path": "lf/all.json", "split": "all", "images": "copy",
                     "image_dir": "lf/images"}]
    r["report"] = {"type": "release", "indicators": {"response": False}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    out = tmp_path / "out"
    result = build(path, out_dir=out, cache_dir=tmp_path / "cache")
    info = json.loads((out / "lf" / "dataset_info.json").read_text())
    name = r["name"]
    assert sorted(info) == [f"{name}_train", f"{name}_validation"]
    assert info[f"{name}_train"]["file_name"] == "train.jsonl"
    assert info[f"{name}_validation"]["file_name"] == "val.jsonl"
    train, val = llamafactory_read(out / "lf", f"{name}_train"), llamafactory_read(out / "lf", f"{name}_validation")
    everything = json.loads((out / "lf" / "all.json").read_text())
    assert train and val and len(train) + len(val) == len(everything)
    listed = [o["path"] for o in result.manifest["outputs"]]
    assert len(listed) == len(set(listed)) and listed.count("lf/dataset_info.json") == 1
    entry = next(o for o in result.manifest["outputs"] if o["path"] == "lf/dataset_info.json")
    assert entry["step"] == "export:0+export:1"
    # a rebuild from the cache publishes the same bytes
    again = build(path, out_dir=tmp_path / "out2", cache_dir=tmp_path / "cache")
    assert again.manifest["outputs"] == result.manifest["outputs"]


def test_two_llamafactory_exports_registering_one_name_in_a_folder_are_a_located_error(
        tmp_path, repo_root):
    from vlitc.errors import RecipeError
    from vlitc.recipe import load_recipe

    r = demo_recipe_data(repo_root)
    r["outputs"] = [{"format": "llamafactory", "path": "lf/a.jsonl"},
                    {"format": "llamafactory", "path": "lf/b.jsonl"},
                    {"format": "llamafactory", "path": "other/b.jsonl"}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    [problem] = [p for p in e.value.problems if "dataset_info.json" in p.message]
    line = path.read_text().splitlines()[problem.location.line - 1]
    assert "lf/b.jsonl" in line
    assert f"dataset {r['name']!r} is already registered in lf/dataset_info.json by outputs[0]" \
        in problem.message and "name:" in problem.hint


def test_parquet_embeds_every_image_of_a_sample_with_several(tmp_path):
    datasets = pytest.importorskip("datasets")
    from vlitc.ops.exporters.parquet import ParquetExporter, release_features

    ctx = context(tmp_path)
    samples = [*demo_samples(tmp_path), two_image_sample(tmp_path)]
    assert ParquetExporter({"path": "t.parquet", "images": "embed"}).export(samples, ctx) == [
        "t.parquet"]
    ds = datasets.load_dataset("parquet", data_files=str(ctx.out_dir / "t.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["images"] == datasets.List(datasets.Image())
    pair = ds[4]
    assert pair["image"] is None  # several images: the single-image column stays empty
    assert [im.getpixel((0, 0)) for im in pair["images"]] == [(255, 0, 0), (9, 9, 9)]
    assert [im.getpixel((0, 0)) for im in ds[0]["images"]] == [(255, 0, 0)]
    assert ds[0]["image"].getpixel((0, 0)) == (255, 0, 0) and ds[3]["images"] == []
    raw = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))[4]["images"]
    assert [r["path"] for r in raw] == ["a.png", "d.png"]
    assert raw[1]["bytes"] == (tmp_path / "images" / "coco" / "d.png").read_bytes()
    assert {"name": "images", "sequence": "image"} in release_features("embed")
