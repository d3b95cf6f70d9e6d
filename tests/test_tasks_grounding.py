"""REC/REG, region captions, attributes and OCR: every box in an answer round-trips to its annotation."""

from __future__ import annotations

import pytest
from _tasks_util import IMG, cats_record, ctx, task

from vlitc.formats import BOX_FORMATS, FORMATS, find_boxes
from vlitc.records import image_record


def regions_record():
    rec = cats_record()
    rec["regions"] = [
        {"phrase": "cat on the left", "bbox": [10.0, 20.0, 210.0, 220.0], "kind": "ref"},
        {"phrase": "a cat stretching on a pink cushion", "bbox": [300.0, 40.0, 500.0, 300.0],
         "kind": "caption"},
    ]
    rec["objects"][0]["attributes"] = ["orange", "striped", "orange"]
    rec["ocr"] = [{"text": "WORLD", "bbox": [120, 10, 200, 30]}, {"text": "HELLO", "bbox": [10, 12, 100, 28]},
                  {"text": "EXIT", "bbox": [10, 100, 60, 120]}]
    return rec


def close(a, b, tol):
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= tol


@pytest.mark.parametrize("box_format", BOX_FORMATS)
@pytest.mark.exercises("task.rec")
def test_rec_answers_round_trip_to_the_annotated_box(box_format):
    rec = regions_record()
    out = list(task("rec", box_format=box_format).run([rec], ctx()))
    bf = FORMATS[box_format]
    # the ref region and the unique couch; the two cats are ambiguous as "the cat"
    assert [s["id"].split("/")[-1] for s in out] == ["r0", "o3"]
    for s in out:
        assert bf.problem(s["turns"][1]["content"]) is None
        back = bf.decode(s["turns"][1]["content"], 640, 480)
        assert close(back, s["meta"]["box"]["bbox"], bf.tolerance(640, 480))
        assert s["meta"]["format"] == box_format
    assert "cat on the left" in out[0]["turns"][0]["content"]


def test_llava_box_text_has_two_decimals_on_the_padded_square():
    out = list(task("rec", **{"from": "objects"}).run([regions_record()], ctx()))
    # couch [0,100,640,480] in a 640x480 image padded to 640x640 (dy = 80)
    assert out[0]["turns"][1]["content"] == "[0.00, 0.28, 1.00, 0.88]"


def test_reg_puts_the_box_in_the_question_and_the_phrase_in_the_answer():
    out = list(task("reg").run([regions_record()], ctx()))
    bf = FORMATS["bbox"]
    for s in out:
        [box] = find_boxes(s["turns"][0]["content"])
        back = bf.decode(str(box), 640, 480)
        assert close(back, s["meta"]["box"]["bbox"], bf.tolerance(640, 480))
    assert [s["turns"][1]["content"] for s in out] == ["cat on the left", "the couch"]


@pytest.mark.exercises("task.region_caption")
def test_region_caption_uses_caption_regions_only():
    out = list(task("region_caption").run([regions_record()], ctx()))
    assert [s["turns"][1]["content"] for s in out] == ["A cat stretching on a pink cushion."]


@pytest.mark.exercises("task.attributes")
def test_attributes_are_listed_once_each_for_the_boxed_object():
    out = list(task("attributes").run([regions_record()], ctx()))
    assert [s["turns"][1]["content"] for s in out] == ["orange and striped"]
    assert "cat" in out[0]["turns"][0]["content"]


def test_ocr_reads_tokens_in_reading_order():
    out = list(task("ocr").run([regions_record()], ctx()))
    assert out[0]["turns"][1]["content"] == "HELLO WORLD EXIT"
    assert out[0]["meta"]["annotations"]["ocr"] == ["WORLD", "HELLO", "EXIT"]


@pytest.mark.exercises("task.ocr")
def test_ocr_per_token_boxes_round_trip():
    out = list(task("ocr", per="token").run([regions_record()], ctx()))
    bf = FORMATS["bbox"]
    for s, tok in zip(out, regions_record()["ocr"], strict=True):
        assert s["turns"][1]["content"] == tok["text"]
        [box] = find_boxes(s["turns"][0]["content"])
        assert close(bf.decode(str(box), 640, 480), tok["bbox"], bf.tolerance(640, 480))


def test_records_without_image_size_give_no_box_samples():
    rec = image_record("1", "coco", {"root": "coco", "path": "x.jpg"},
                       regions=[{"phrase": "a cat", "bbox": [0, 0, 5, 5], "kind": "ref"}])
    assert list(task("rec").run([rec], ctx())) == []


def test_box_formats_encode_and_decode(tmp_path):
    box = [64.0, 48.0, 320.0, 240.0]
    assert FORMATS["bbox_normalized"].encode(box, 640, 480) == "[0.100, 0.100, 0.500, 0.500]"
    assert FORMATS["bbox_thousand"].encode(box, 640, 480) == "[100, 100, 500, 500]"
    assert FORMATS["bbox_thousand"].decode("at [100, 100, 500, 500].", 640, 480) == box
    assert FORMATS["bbox"].problem("[0.5, 0.2, 0.1, 0.9]") is not None
    assert IMG["width"] == 640


FAMILY = {  # couch [0, 100, 640, 480] in a 640x480 image, on 0-1000
    "qwen_vl": "<ref>the couch</ref><box>(0,208),(1000,1000)</box>",
    "qwen2_vl": "<|object_ref_start|>the couch<|object_ref_end|>"
                "<|box_start|>(0,208),(1000,1000)<|box_end|>",
    "internvl": "<ref>the couch</ref><box>[[0, 208, 1000, 1000]]</box>",
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_family_grounding_syntax_tags_the_phrase_and_the_box(name):
    out = list(task("rec", box_format=name, **{"from": "objects"}).run([regions_record()], ctx()))
    answer = out[0]["turns"][1]["content"]
    assert answer == FAMILY[name]
    bf = FORMATS[name]
    assert bf.phrase(answer) == "the couch"
    assert bf.decode(answer, 640, 480) == pytest.approx([0.0, 99.84, 640.0, 480.0])
    # a bare box, another family's syntax, or numbers past 1000 do not fit
    assert bf.problem("[0.00, 0.28, 1.00, 0.88]") is not None
    assert all(bf.problem(text) is not None for k, text in FAMILY.items() if k != name)
    assert "outside" in bf.problem(FAMILY[name].replace("1000,", "1001,").replace(
        "1000, 1000", "1001, 1000"))


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.exercises("task.reg")
def test_family_box_in_a_reg_question_round_trips_without_a_phrase(name):
    out = list(task("reg", box_format=name).run([regions_record()], ctx()))
    bf = FORMATS[name]
    for s in out:
        question = s["turns"][0]["content"]
        assert bf.phrase(question) is None and bf.problem(question) is None
        back = bf.decode(question, 640, 480)
        assert close(back, s["meta"]["box"]["bbox"], bf.tolerance(640, 480))
    assert [s["turns"][1]["content"] for s in out] == ["cat on the left", "the couch"]


def test_family_boxes_clip_to_the_image_and_parse_spaced_text():
    bf = FORMATS["qwen_vl"]
    assert bf.encode([-5, -5, 700, 500], 640, 480) == "<box>(0,0),(1000,1000)</box>"
    assert bf.decode("<box>( 10 , 20 ), ( 500 , 1000 )</box>", 1000, 500) == [10.0, 10.0, 500.0, 500.0]
