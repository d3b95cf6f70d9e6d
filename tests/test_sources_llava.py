"""LLaVA re-ingest, ShareGPT text-only data, the generic column-mapped loader and image folders,
on the real LLaVA, POPE and MultiInstruct fixture files read in place."""

from __future__ import annotations

import json

import pytest

from tests._sources_util import load, make_ctx, make_image, write_json, write_jsonl
from vlitc import boxes
from vlitc.errors import InputError

CAPS_BOXES = "LLaVA/llava/eval/table/caps_boxes_coco2014_val_80.jsonl"


@pytest.mark.exercises("source.llava")
def test_llava_caps_boxes_normalised_boxes_become_pixels_of_the_image(fixtures_dir, tmp_path):
    rows = [json.loads(x) for x in (fixtures_dir / CAPS_BOXES).read_text().splitlines()]
    first = rows[0]
    make_image(tmp_path / "img" / first["image"], (640, 480))
    ctx = make_ctx(fixtures_dir)
    recs = load("llava", {"file": CAPS_BOXES, "id": "image", "images": str(tmp_path / "img"),
                          "check_images": False}, ctx)
    assert [r["id"] for r in recs] == ["296284"]
    assert ctx.counters["missing_image"] == 79
    rec = recs[0]
    assert rec["captions"] == first["captions"]
    assert len(rec["objects"]) == len(first["instances"])
    for o, raw in zip(rec["objects"], first["instances"], strict=True):
        assert o["category"] == raw["category"]
        assert o["bbox"] == [round(v, 2) for v in boxes.from_normalized(raw["bbox"], 640, 480)]
        back = boxes.to_normalized(o["bbox"], 640, 480, ndigits=3)
        assert back == pytest.approx(raw["bbox"], abs=1e-3)


def test_llava_normalised_boxes_without_image_sizes_are_counted(fixtures_dir):
    ctx = make_ctx(fixtures_dir)
    recs = load("llava", {"file": CAPS_BOXES}, ctx)
    assert len(recs) == 80 and sum(len(r["captions"]) for r in recs) == 401
    assert ctx.counters["unreadable_box"] == 476


def test_llava_conversations_lose_placeholders_and_merge_per_image_one_entry_each(tmp_path):
    write_json(tmp_path / "llava.json", [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus?"},
            {"from": "gpt", "value": "White and red."}]},
        {"id": "000000033471-2", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "Where is it?\n<image>"},
            {"from": "gpt", "value": "On a street."}]},
        {"id": "bad", "image": "x.jpg", "conversations": [{"from": "gpt", "value": "hi"}]}])
    ctx = make_ctx(tmp_path)
    recs = load("llava", {"file": "llava.json", "id": "image"}, ctx)
    assert [r["id"] for r in recs] == ["33471", "x"]
    assert recs[0]["conversations"] == [
        {"id": "000000033471", "where": "llava.json[0]",
         "turns": [{"role": "user", "content": "What are the colors of the bus?"},
                   {"role": "assistant", "content": "White and red."}]},
        {"id": "000000033471-2", "where": "llava.json[1]",
         "turns": [{"role": "user", "content": "Where is it?"},
                   {"role": "assistant", "content": "On a street."}]}]
    assert recs[0]["meta"]["image_file"] == "coco/train2017/000000033471.jpg"
    assert ctx.counters["bad_conversation"] == 1


def test_llava_qa_fixture_pairs_load_as_item_records(fixtures_dir):
    recs = load("generic", {"file": "LLaVA/playground/data/coco2014_val_gpt4_qa_30x3.jsonl",
                            "columns": {"image": "image", "prompt": "instruction",
                                        "response": "output", "split": "type"},
                            "id_from": "image", "split": "conv"}, make_ctx(fixtures_dir))
    assert len(recs) == 30 and all(len(r["conversations"]) == 1 for r in recs)
    first = recs[0]["conversations"][0]
    assert [t["role"] for t in first["turns"]] == ["user", "assistant"]
    assert first["where"] == "coco2014_val_gpt4_qa_30x3.jsonl:1"
    assert first["meta"] == {"id": "000000525439"}  # the unmapped plain fields


@pytest.mark.exercises("source.sharegpt")
def test_sharegpt_text_only_conversations_and_system_prompt(tmp_path):
    write_jsonl(tmp_path / "sharegpt.jsonl", [
        {"id": "a1", "conversations": [{"from": "system", "value": "Be brief."},
                                       {"from": "human", "value": "Hi"},
                                       {"from": "gpt", "value": "Hello!"},
                                       {"from": "human", "value": "dangling"}]},
        {"id": "a1", "messages": [{"role": "user", "content": "2+2?"},
                                  {"role": "assistant", "content": "4"}]}])
    ctx = make_ctx(tmp_path)
    recs = load("sharegpt", {"file": "sharegpt.jsonl"}, ctx)
    assert [r["id"] for r in recs] == ["a1", "a1#2"]
    assert recs[0]["image"] is None
    assert recs[0]["conversations"] == [
        {"id": "a1", "where": "sharegpt.jsonl:1", "system": "Be brief.",
         "turns": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}]
    assert recs[1]["conversations"][0]["turns"][1] == {"role": "assistant", "content": "4"}
    assert ctx.counters == {"duplicate_id": 1, "trailing_user_turn": 1}


def test_malformed_jsonl_line_is_located(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"id": 1, "conversations": []}\n{"id": 2,, }\n')
    with pytest.raises(InputError) as e:
        load("sharegpt", {"file": "s.jsonl"}, make_ctx(tmp_path))
    assert (e.value.location.line, e.value.location.column) == (2, 10)


def test_pope_jsonl_named_json_loads_through_the_generic_loader(fixtures_dir):
    ctx = make_ctx(fixtures_dir)
    recs = load("generic", {"file": "POPE/output/coco/coco_pope_random.json",
                            "columns": {"image": "image", "question": "text", "answer": "label"},
                            "id_from": "image"}, ctx, "pope")
    assert len(recs) == 500 and sum(len(r["qas"]) for r in recs) == 3000
    assert recs[0]["id"] == "310196"
    assert recs[0]["qas"][0] == {"id": "310196/0", "question": "Is there a snowboard in the image?",
                                 "answers": ["yes"], "answer": "yes", "choices": [],
                                 "answer_type": None}
    answers = [q["answer"] for r in recs for q in r["qas"]]
    assert answers.count("yes") == answers.count("no") == 1500


def test_multiinstruct_rows_become_conversations_with_choices(fixtures_dir):
    recs = load("generic", {"file": "MultiInstruct/train.jsonl",
                            "columns": {"id": "unique_id", "image": "image_path",
                                        "prompt": "prompt", "response": "target",
                                        "question": "question", "choices": "options",
                                        "answer": "target_txt", "split": "task_name"}},
                make_ctx(fixtures_dir))
    assert len(recs) == 53  # 59 rows, some sharing a unique_id merge
    first = recs[0]
    assert first["id"] == "VQA_object_presence_10026521"
    assert first["meta"]["image_file"] == \
        "raw_datasets/MSCOCO2014/train2014/COCO_train2014_000000005277.jpg"
    assert first["conversations"][0]["turns"][1] == {"role": "assistant", "content": "no"}
    assert first["qas"][0]["choices"] == ["no", "yes"]
    caption = load("generic", {"file": "MultiInstruct/train.jsonl", "split": "image_caption",
                               "columns": {"id": "unique_id", "caption": "target",
                                           "split": "task_name"}}, make_ctx(fixtures_dir))
    assert caption[0]["captions"] == ["A parade float of a dog on a skateboard with on lookers."]


@pytest.mark.exercises("source.generic")
def test_generic_csv_and_unknown_column_error(tmp_path):
    (tmp_path / "t.csv").write_text("img,cap,sp\n1.jpg,a cat,train\n2.jpg,a dog,val\n")
    recs = load("generic", {"file": "t.csv", "columns": {"image": "img", "caption": "cap",
                                                          "split": "sp"},
                            "id_from": "image", "split": ["train"]}, make_ctx(tmp_path))
    assert [(r["id"], r["captions"]) for r in recs] == [("1", ["a cat"])]
    with pytest.raises(InputError, match="columns not in any row: capt"):
        load("generic", {"file": "t.csv", "columns": {"caption": "capt"}}, make_ctx(tmp_path))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError) as e:
        load("generic", {"file": "bad.csv", "columns": {"caption": "a"}}, make_ctx(tmp_path))
    assert e.value.location.line == 3


@pytest.mark.exercises("source.image_folder")
def test_image_folder_one_record_per_image(tmp_path):
    make_image(tmp_path / "imgs" / "000000000009.jpg")
    make_image(tmp_path / "imgs" / "sub" / "b.png", (10, 20))
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    recs = load("image_folder", {"images": "imgs"}, make_ctx(tmp_path))
    assert [(r["id"], r["image"]["path"]) for r in recs] == [
        ("000000000009", "000000000009.jpg"), ("b", "sub/b.png")]
    assert (recs[1]["image"]["width"], recs[1]["image"]["height"]) == (10, 20)
    coco = load("image_folder", {"images": "imgs", "id_from": "coco", "recursive": False},
                make_ctx(tmp_path))
    assert [r["id"] for r in coco] == ["9"]


def _json_layouts(items: list) -> dict[str, str]:
    one_per_line = "[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in items) + "\n]\n"
    return {"one line": json.dumps(items), "indented": json.dumps(items, indent=2),
            "one per line": one_per_line,
            "commas first": "[ " + "\n, ".join(json.dumps(x) for x in items) + "\n]",
            "two per line": "[" + ",".join(json.dumps(x) + ("\n" if i % 2 else "")
                                           for i, x in enumerate(items)) + "]"}


def test_json_arrays_are_read_element_by_element_in_every_layout(tmp_path, monkeypatch):
    import orjson

    from vlitc.ops.sources import _common

    monkeypatch.setattr(_common._ArrayReader, "BLOCK", 5)  # blocks end inside elements
    items = [{"id": "a", "conversations": [{"from": "human", "value": "<image>\nWhat, ] is {it}?"}]},
             {"id": 2, "v": [1.5, -2, True, None, "é😀", "\\\"x\",\n]"]}, [], "s", 7, {"e": {}}]
    for layout, text in _json_layouts(items).items():
        path = tmp_path / "a.json"
        path.write_text(text, encoding="utf-8")
        assert list(_common.iter_json_array(path)) == orjson.loads(text), layout
    (tmp_path / "empty.json").write_text(" [ ]\n")
    assert list(_common.iter_json_array(tmp_path / "empty.json")) == []


@pytest.mark.parametrize("text,line", [("[\n{\"a\": 1},\n{\"a\": NaN}\n]", 3), ("[1, 2,]", 1),
                                       ("[{\"a\": 1} {\"b\": 2}]", 1), ("[1]\nx", 2),
                                       ("[\n{\"a\": \"\\ud800\"}\n]", 2), ("[1, 2", 1)])
def test_a_malformed_json_array_read_as_a_stream_is_the_located_error_of_the_file(tmp_path, text,
                                                                                  line):
    from vlitc.ops.sources._common import iter_json_array, read_json

    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError) as streamed:
        list(iter_json_array(path))
    with pytest.raises(InputError) as whole:
        read_json(path)
    assert str(streamed.value) == str(whole.value) and streamed.value.location.line == line


def test_a_llava_file_read_item_by_item_gives_the_records_of_reading_it_whole(tmp_path,
                                                                             monkeypatch):
    """``id: item`` reads the file as a stream; the records are those of reading every item
    first (as ``id: image`` does), duplicate ids made unique the same way."""
    from vlitc.ops.sources.text import ConversationSource

    items = [{"id": f"{i % 50}", "image": f"{i:012d}.jpg", "type": "conv",
              "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                {"from": "gpt", "value": f"Thing {i}."}]} for i in range(120)]
    items += [{"id": "t", "conversations": [{"from": "human", "value": "Hi"},
                                            {"from": "gpt", "value": "Hello."}]}, "not an item"]
    write_json(tmp_path / "d.json", items)
    ctx = make_ctx(tmp_path)
    streamed = load("llava", {"file": "d.json"}, ctx)
    monkeypatch.setattr(ConversationSource, "stream_entries", lambda self, ctx, issues: None)
    whole_ctx = make_ctx(tmp_path)
    assert streamed == load("llava", {"file": "d.json"}, whole_ctx)
    assert ctx.counters == whole_ctx.counters and ctx.counters["duplicate_id"] == 70
    assert [r["id"] for r in streamed[49:52]] == ["49", "0#2", "1#2"] and len(streamed) == 121
    assert streamed[0]["conversations"][0]["turns"][0] == {"role": "user", "content": "What is it?"}
