"""Samples with several images (LLaVA-OneVision / M4-Instruct ``"image": [...]``, one ``<image>``
each): the sample model, structure checks, the llava and sharegpt sources, CLIP per image,
every exporter, the release reader and the report gallery."""

from __future__ import annotations

import json

import pytest
from _filters_util import run

from tests._sources_util import load, make_ctx, make_image, write_json, write_jsonl
from vlitc.ops.base import OpContext
from vlitc.ops.exporters.llava import LlavaExporter, llava_line, llava_record
from vlitc.ops.exporters.sharegpt import ShareGptExporter, sharegpt_line, sharegpt_record
from vlitc.ops.exporters.validate import validate_llava_file
from vlitc.ops.filters.text import StructureFilter
from vlitc.ops.tasks.text_only import Conversations
from vlitc.records import image_value, images_of, sample, structure_problems
from vlitc.release.read import read_file

A = {"root": "m4", "path": "a.png", "width": 40, "height": 30, "sha256": "aa"}
B = {"root": "m4", "path": "b.png", "width": 40, "height": 30, "sha256": "bb"}


def two_image_sample(sid="pair/1", placed=False):
    first = "<image>\n<image>\nWhat differs between the two images?" if placed else \
        "What differs between the two images?"
    return sample(sid, "pair", [{"role": "user", "content": first},
                                {"role": "assistant", "content": "The first is red, the second blue."}],
                  source="m4", image=[A, B])


def test_sample_model_puts_one_placeholder_per_image_and_reads_all_shapes():
    s = two_image_sample()
    assert s["turns"][0]["content"].startswith("<image>\n<image>\nWhat differs")
    assert images_of(s) == [A, B] and structure_problems(s) == []
    assert image_value([A]) == A and image_value([]) is None and image_value(A) == A
    one = sample("x", "t", [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                 image=[A])
    assert one["image"] == A and one["turns"][0]["content"] == "<image>\nQ"
    interleaved = sample("y", "t", [
        {"role": "user", "content": "Left: <image> right: <image> which is red?"},
        {"role": "assistant", "content": "The left one."}], image=[A, B])
    assert interleaved["turns"][0]["content"] == "Left: <image> right: <image> which is red?"
    assert structure_problems(interleaved) == []


@pytest.mark.parametrize("image", [None, A, [A, B]])
def test_a_sample_that_owns_its_turns_and_meta_takes_them_as_they_are(image):
    def parts():
        return ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                {"record_id": "1", "annotations": {"width": 40}})

    turns, meta = parts()
    copied = sample("x", "t", turns, image=image, meta=meta)
    assert turns == parts()[0]  # a copy: the caller's turns keep no placeholder
    turns, meta = parts()
    taken = sample("x", "t", turns, image=image, meta=meta, own=True)
    assert taken == copied and taken["turns"] is turns and taken["meta"] is meta
    assert sample("x", "t", parts()[0], own=True)["meta"] == {}


def test_structure_counts_placeholders_against_images():
    s = two_image_sample()
    s["turns"][0]["content"] = s["turns"][0]["content"].replace("<image>\n", "", 1)
    assert structure_problems(s) == ["1 image placeholders for 2 images"]
    t = two_image_sample()
    t["turns"][0]["content"] = t["turns"][0]["content"].replace("<image>\n", "", 1)
    t["turns"][1]["content"] += " <image>"
    assert "image placeholder in an assistant turn" in structure_problems(t)
    _, keep = run(StructureFilter({}), [two_image_sample(), s])
    assert keep[0] is None and keep[1].startswith("malformed conversation: 1 image placeholders")


def test_llava_list_form_and_sharegpt_images_list_lines_match_json_dumps():
    s = two_image_sample()
    assert llava_record(s)["image"] == ["m4/a.png", "m4/b.png"]
    assert llava_line(s) == json.dumps(llava_record(s), sort_keys=True, ensure_ascii=False)
    assert sharegpt_record(s)["images"] == ["m4/a.png", "m4/b.png"]
    assert sharegpt_line(s) == json.dumps(sharegpt_record(s), sort_keys=True, ensure_ascii=False)


@pytest.fixture
def m4(tmp_path):
    root = tmp_path / "m4"
    make_image(root / "a.png", (40, 30), "red")
    make_image(root / "b.png", (40, 30), "blue")
    return root


def test_exports_validate_and_read_back_with_every_image(tmp_path, m4):
    import pyarrow.parquet as pq

    from vlitc.ops.exporters.parquet import ParquetExporter

    out = tmp_path / "out"
    out.mkdir()
    ctx = OpContext(seed=1, recipe_dir=tmp_path, out_dir=out, image_roots={"m4": m4})
    samples = [two_image_sample(), sample("one", "pair", [{"role": "user", "content": "Q"},
                                                          {"role": "assistant", "content": "A."}],
                                          image=A, source="m4")]
    LlavaExporter({"path": "l.json"}).export(samples, ctx)
    ShareGptExporter({"path": "s.jsonl"}).export(samples, ctx)
    ParquetExporter({"path": "p.parquet"}).export(samples, ctx)
    assert validate_llava_file(out / "l.json", m4) == 2
    rows = pq.read_table(out / "p.parquet").to_pylist()
    assert [(r["image"], r["images"]) for r in rows] == [(None, ["a.png", "b.png"]),
                                                          ("a.png", ["a.png"])]
    for name in ("l.json", "s.jsonl", "p.parquet"):
        back = read_file(out / name)
        assert [len(images_of(s)) for s in back] == [2, 1]
        assert back[0]["turns"][0]["content"].startswith("<image>\n<image>\n")


def test_llava_source_reads_list_images_keeping_their_placeholders(tmp_path, m4):
    write_json(tmp_path / "ov.json", [
        {"id": "ov1", "image": ["a.png", "b.png"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nCompare."},
            {"from": "gpt", "value": "Red, then blue."}]},
        {"id": "ov2", "image": ["a.png", "missing.png"], "conversations": [
            {"from": "human", "value": "<image><image>Compare."}, {"from": "gpt", "value": "?"}]},
        {"id": "ov3", "image": ["a.png"], "conversations": [
            {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}]}])
    ctx = make_ctx(tmp_path)
    recs = load("llava", {"file": "ov.json", "images": str(m4)}, ctx, "m4")
    assert [r["id"] for r in recs] == ["ov1", "ov3"] and ctx.counters["missing_image"] == 1
    assert [i["path"] for i in images_of(recs[0])] == ["a.png", "b.png"]
    assert recs[0]["conversations"][0]["turns"][0]["content"] == "<image>\n<image>\nCompare."
    assert recs[1]["image"]["path"] == "a.png"  # a list of one is one image
    samples = list(Conversations({"source": "m4"}, "ov").run(recs, make_ctx(tmp_path)))
    assert [s["id"] for s in samples] == ["ov1", "ov3"]
    assert all(structure_problems(s) == [] for s in samples)
    assert samples[1]["turns"][0]["content"] == "<image>\nColour?"


def test_sharegpt_source_reads_llama_factory_images(tmp_path, m4):
    write_jsonl(tmp_path / "lf.jsonl", [
        {"messages": [{"role": "user", "content": "<image><image>Which is blue?"},
                      {"role": "assistant", "content": "The second."}],
         "images": ["a.png", "b.png"]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}])
    recs = load("sharegpt", {"file": "lf.jsonl", "images": str(m4)}, make_ctx(tmp_path), "lf")
    assert len(images_of(recs[0])) == 2 and recs[1]["image"] is None
    out = list(Conversations({"source": "lf"}, "lf").run(recs, make_ctx(tmp_path)))
    assert [len(images_of(s)) for s in out] == [2, 0]


def test_clip_scores_each_image_and_averages():
    pytest.importorskip("open_clip", reason="needs the clip extra")
    import numpy as np

    from vlitc.ops.filters.clip import ClipMatchFilter

    text = np.array([0.6, 0.8], dtype=np.float32)
    rows = [np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)]
    got = ClipMatchFilter._score([text], rows, "turns_mean")
    assert got["image_scores"] == [0.6, 0.8] and got["score"] == pytest.approx(0.7)
    assert "image_scores" not in ClipMatchFilter._score([text], rows[:1], "turns_mean")


def test_a_multi_image_path_outside_the_images_folder_is_a_located_error(tmp_path, m4):
    from vlitc.errors import InputError

    write_json(tmp_path / "ov.json", [{"id": "x", "image": ["a.png", "../../etc/passwd"],
                                       "conversations": [{"from": "human", "value": "<image><image>Q"},
                                                         {"from": "gpt", "value": "A."}]}])
    with pytest.raises(InputError, match="outside"):
        load("llava", {"file": "ov.json", "images": str(m4)}, make_ctx(tmp_path), "m4")


def test_the_fast_structure_check_agrees_with_the_full_one_on_random_conversations():
    import random

    from vlitc.records import is_sound, structure_problems

    rng = random.Random(3)
    texts = ["", " ", "\n", "hi", "<image>\nhi", "<image>", "a<image>b", "<ima", "ge>", "<image><image>"]
    images = [None, {"root": "r", "path": "p"}, [{"root": "r", "path": "p"}, {"root": "r", "path": "q"}]]
    sound = 0
    for _ in range(20_000):
        turns = [{"role": ("user", "assistant")[i % 2] if rng.random() < 0.9 else
                  rng.choice(["system", "user", "assistant"]), "content": rng.choice(texts)}
                 for i in range(rng.choice([0, 1, 2, 2, 3, 4, 4, 6]))]
        s = {"turns": turns, "image": rng.choice(images)}
        full = not structure_problems(s)
        fast = is_sound(s)
        # never passes a sample the full check refuses; several images always get the full check
        assert fast == (full and not isinstance(s["image"], list))
        sound += fast
    assert sound > 200
    assert not is_sound({"turns": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}],
                         "image": None})  # not a string: the full check decides
