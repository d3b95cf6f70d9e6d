"""Scene-text (TextVQA, TextCaps, COCO-Text) and region (Visual Genome, RefCOCO) sources, on
small files written in each dataset's published format."""

from __future__ import annotations

import pickle

import pytest

from tests._sources_util import load, make_ctx, write_json
from vlitc.errors import InputError


def _textvqa(tmp_path):
    write_json(tmp_path / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": [
        {"question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
         "image_width": 1024, "image_height": 664, "question_id": 34602, "set_name": "val",
         "answers": ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota",
                     "dakota", "dakota digital", "dakota digital", "dakota", "dakota"]}]})
    write_json(tmp_path / "TextVQA_Rosetta_OCR_v0.2_val.json", {"data": [
        {"image_id": "003a8ae2ef43b901", "ocr_tokens": ["DAKOTA"], "ocr_info": [
            {"word": "DAKOTA", "bounding_box": {"top_left_x": 0.25, "top_left_y": 0.5,
                                                "width": 0.25, "height": 0.1, "rotation": 0}}]}]})
    write_json(tmp_path / "TextCaps_0.1_val.json", {"data": [
        {"image_id": "003a8ae2ef43b901", "image_width": 1024, "image_height": 664,
         "set_name": "val", "caption_id": 1, "caption_str": "A Dakota digital camera."},
        {"image_id": "003a8ae2ef43b901", "image_width": 1024, "image_height": 664,
         "set_name": "val", "caption_id": 2, "caption_str": "A camera that says Dakota."}]})


@pytest.mark.exercises("source.textvqa")
def test_textvqa_consensus_and_rosetta_tokens_in_pixels(tmp_path):
    _textvqa(tmp_path)
    (rec,) = load("textvqa", {"questions": "TextVQA_0.5.1_val.json",
                              "captions": "TextCaps_0.1_val.json",
                              "ocr": "TextVQA_Rosetta_OCR_v0.2_val.json", "split": "val"},
                  make_ctx(tmp_path))
    assert rec["id"] == "003a8ae2ef43b901" and rec["meta"]["image_file"] == "003a8ae2ef43b901.jpg"
    assert rec["qas"][0]["answer"] == "dakota" and rec["qas"][0]["agreement"] == 1.0
    assert rec["ocr"] == [{"text": "DAKOTA", "bbox": [256.0, 332.0, 512.0, 398.4]}]
    assert rec["captions"] == ["A Dakota digital camera.", "A camera that says Dakota."]


@pytest.mark.exercises("source.textcaps")
def test_textcaps_needs_its_captions_file(tmp_path):
    _textvqa(tmp_path)
    (rec,) = load("textcaps", {"captions": "TextCaps_0.1_val.json"}, make_ctx(tmp_path))
    assert "qas" not in rec and len(rec["captions"]) == 2


@pytest.mark.exercises("source.coco_text")
def test_coco_text_keeps_legible_text_with_pixel_boxes(tmp_path):
    write_json(tmp_path / "cocotext.v2.json", {
        "imgs": {"540965": {"id": 540965, "set": "train", "width": 640, "height": 427,
                            "file_name": "COCO_train2014_000000540965.jpg"},
                 "1": {"id": 1, "set": "val", "width": 10, "height": 10, "file_name": "x.jpg"}},
        "anns": {"45346": {"mask": [468.9, 286.7, 468.9, 295.2], "class": "machine printed",
                           "bbox": [468.9, 286.7, 24.1, 9.1], "image_id": 540965, "id": 45346,
                           "language": "english", "area": 159.3, "utf8_string": "HOLLYWOOD",
                           "legibility": "legible"},
                 "45347": {"mask": [], "class": "handwritten", "bbox": [1, 1, 2, 2],
                           "image_id": 540965, "id": 45347, "legibility": "illegible"}},
        "imgToAnns": {"540965": [45346, 45347]}})
    (rec,) = load("coco_text", {"annotations": "cocotext.v2.json", "split": "train"},
                  make_ctx(tmp_path))
    assert rec["id"] == "540965"
    assert rec["ocr"] == [{"text": "HOLLYWOOD", "bbox": [468.9, 286.7, 493.0, 295.8],
                           "legible": True, "class": "machine printed", "language": "english"}]
    both = load("coco_text", {"annotations": "cocotext.v2.json", "legible_only": False},
                make_ctx(tmp_path))
    assert len(both[0]["ocr"]) == 2


@pytest.mark.exercises("source.visual_genome")
def test_visual_genome_regions_attributes_and_relationships(tmp_path):
    write_json(tmp_path / "image_data.json", [
        {"image_id": 1, "width": 800, "height": 600, "coco_id": None},
        {"image_id": 107899, "width": 500, "height": 375, "coco_id": 39769}])
    write_json(tmp_path / "region_descriptions.json", [
        {"id": 107899, "regions": [{"region_id": 1382, "image_id": 107899, "phrase": "two cats ",
                                    "x": 10, "y": 20, "width": 100, "height": 50}]}])
    write_json(tmp_path / "attributes.json", [
        {"image_id": 107899, "attributes": [
            {"object_id": 5, "x": 1, "y": 2, "w": 30, "h": 40, "names": ["cat"],
             "attributes": ["striped "]}]}])
    write_json(tmp_path / "relationships.json", [
        {"image_id": 107899, "relationships": [
            {"relationship_id": 9, "predicate": "ON", "subject": {"object_id": 5, "x": 1, "y": 2,
                                                                   "w": 30, "h": 40, "name": "cat"},
             "object": {"object_id": 6, "x": 0, "y": 100, "w": 500, "h": 275,
                        "names": ["couch"]}}]}])
    params = {"image_data": "image_data.json", "regions": "region_descriptions.json",
              "attributes": "attributes.json", "relationships": "relationships.json"}
    (rec,) = load("visual_genome", params, make_ctx(tmp_path))
    assert rec["id"] == "107899" and rec["meta"]["image_size"] == [500, 375]
    assert rec["regions"] == [{"phrase": "two cats", "bbox": [10.0, 20.0, 110.0, 70.0],
                               "kind": "region", "id": 1382}]
    assert [(o["category"], o["bbox"], o["attributes"]) for o in rec["objects"]] == [
        ("cat", [1.0, 2.0, 31.0, 42.0], ["striped"]), ("couch", [0.0, 100.0, 500.0, 375.0], [])]
    assert rec["relations"] == [{"subject": 0, "predicate": "on", "object": 1, "id": 9}]
    (by_coco,) = load("visual_genome", {**params, "id": "coco"}, make_ctx(tmp_path))
    assert by_coco["id"] == "39769"


def _refcoco_instances(tmp_path):
    return write_json(tmp_path / "instances.json", {
        "images": [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg",
                    "width": 640, "height": 480}],
        "annotations": [{"id": 1719310, "image_id": 581857, "category_id": 1, "iscrowd": 0,
                         "bbox": [103.93, 299.99, 134.22, 177.23], "segmentation": [[1, 2, 3]]}],
        "categories": [{"id": 1, "name": "person"}]})


REFS = [{"sent_ids": [8, 9], "file_name": "COCO_train2014_000000581857_16.jpg",
         "ann_id": 1719310, "ref_id": 16, "image_id": 581857, "split": "train",
         "sentences": [{"tokens": ["lady"], "raw": "lady with back to us", "sent_id": 8,
                        "sent": "lady with back to us"},
                       {"tokens": ["woman"], "raw": "Woman in black.", "sent_id": 9,
                        "sent": "woman in black"}], "category_id": 1},
        {"ann_id": 42, "ref_id": 17, "image_id": 581857, "split": "train",
         "sentences": [{"raw": "ghost", "sent": "ghost"}], "category_id": 1}]


def test_refcoco_pickled_refs_become_regions_with_instance_boxes(tmp_path):
    _refcoco_instances(tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(REFS, protocol=2))
    ctx = make_ctx(tmp_path)
    (rec,) = load("refcoco", {"refs": "refs(unc).p", "instances": "instances.json",
                              "split": "train"}, ctx)
    assert rec["id"] == "581857"
    box = [103.93, 299.99, 238.15, 477.22]
    assert [(r["phrase"], r["bbox"]) for r in rec["regions"]] == [
        ("lady with back to us", box), ("Woman in black.", box)]
    assert ctx.counters["ref_unknown_instance"] == 1 and "objects" not in rec
    assert load("refcoco", {"refs": "refs(unc).p", "instances": "instances.json",
                            "split": "val"}, make_ctx(tmp_path)) == []


def test_refcoco_pickle_with_code_is_refused(tmp_path):
    _refcoco_instances(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "refs.p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(InputError, match="only plain data"):
        load("refcoco", {"refs": "refs.p", "instances": "instances.json"}, make_ctx(tmp_path))


@pytest.mark.exercises("source.refcoco")
def test_refcoco_json_refs_with_objects(tmp_path):
    _refcoco_instances(tmp_path)
    write_json(tmp_path / "refs.json", REFS[:1])
    (rec,) = load("refcoco", {"refs": "refs.json", "instances": "instances.json",
                              "objects": True}, make_ctx(tmp_path))
    assert [o["category"] for o in rec["objects"]] == ["person"]
