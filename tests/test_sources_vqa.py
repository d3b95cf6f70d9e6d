"""VQA-family sources (VQA v2, OK-VQA, A-OKVQA, GQA) and the VQA consensus answer."""

from __future__ import annotations

import pytest

from tests._sources_util import load, make_ctx, make_image, write_json
from vlitc.ops.sources._vqa_eval import accuracy, consensus, normalize_answer

VQA_SAMPLE = "awesome-dataset-annotations/vqa2/v2_Annotations_Val_mscoco"


def test_vqa_accuracy_is_the_leave_one_out_mean_of_min_count_over_three():
    assert [round(accuracy(m, 10), 4) for m in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]


@pytest.mark.parametrize("raw, norm", [
    ("Two", "2"), ("the dog", "dog"), ("dont", "don't"), ("yes.", "yes"),
    ("3.5", "3.5"), ("black, white", "black white"), ("1,000", "1000"), ("t-shirt", "t shirt"),
])
def test_answer_normalisation_follows_the_official_evaluation(raw, norm):
    assert normalize_answer(raw) == norm


def test_consensus_counts_normalised_forms_and_keeps_the_dataset_answer_on_ties():
    assert consensus(["2", "two", "Two", "3", "3", "3", "4", "5", "6", "7"]) == ("2", 0.9)
    # 'tan' and 'brown' both said by 4 humans: the dataset's own answer wins the tie
    ans = ["tan"] * 4 + ["brown"] * 4 + ["beige", "white"]
    assert consensus(ans, "brown") == ("brown", 1.0)
    assert consensus(ans) == ("tan", 1.0)
    assert consensus(["yes"] * 10, "yes") == ("yes", 1.0)
    assert consensus([]) == (None, 0.0)


def test_vqa_v2_real_annotations_keep_all_answers_and_agree_with_multiple_choice(fixtures_dir):
    ctx = make_ctx(fixtures_dir / VQA_SAMPLE)
    recs = load("vqa_v2", {"annotations": "v2_mscoco_val2014_annotations.json_samples.json"}, ctx)
    qas = [q for r in recs for q in r["qas"]]
    assert len(qas) == 100 and len(recs) == 19
    assert all(len(q["answers"]) == 10 for q in qas)
    assert all(q["answer"] == q["mc_answer"] for q in qas)
    first = recs[0]
    assert first["id"] == "262148"
    assert first["meta"]["image_file"] == "COCO_val2014_000000262148.jpg"
    assert first["qas"][0] == {
        "id": "262148000", "question": None,
        "answers": ["down", "down", "at table", "skateboard", "down", "table", "down", "down",
                    "down", "down"],
        "answer": "down", "agreement": 1.0, "mc_answer": "down", "answer_type": "other",
        "question_type": "none of the above"}
    assert ctx.counters["question_missing"] == 100


def _vqa_files(tmp_path):
    q = write_json(tmp_path / "q.json", {"data_subtype": "val2014", "questions": [
        {"image_id": 7, "question": "What color is the cat?", "question_id": 70},
        {"image_id": 8, "question": "Is it raining?", "question_id": 80},
        {"image_id": 7, "question": "How many cats?", "question_id": 71}]})
    a = write_json(tmp_path / "a.json", {"data_subtype": "val2014", "annotations": [
        {"image_id": 7, "question_id": 70, "answer_type": "other", "question_type": "what color",
         "multiple_choice_answer": "black",
         "answers": [{"answer": x} for x in ["black"] * 6 + ["gray"] * 4]},
        {"image_id": 8, "question_id": 80, "answer_type": "yes/no", "question_type": "is it",
         "multiple_choice_answer": "no", "answers": [{"answer": "no"}] * 10},
        {"image_id": 7, "question_id": 71, "answer_type": "number", "question_type": "how many",
         "multiple_choice_answer": "1", "answers": [{"answer": "1"}] * 10}]})
    return q, a


def test_vqa_v2_groups_questions_by_image_and_names_coco_2014_files(tmp_path):
    q, a = _vqa_files(tmp_path)
    make_image(tmp_path / "img" / "COCO_val2014_000000000007.jpg", (40, 30))
    ctx = make_ctx(tmp_path)
    recs = load("vqa_v2", {"questions": "q.json", "annotations": "a.json", "images": "img"}, ctx)
    assert [r["id"] for r in recs] == ["7"]
    assert [q["question"] for q in recs[0]["qas"]] == ["What color is the cat?", "How many cats?"]
    assert recs[0]["image"]["path"] == "COCO_val2014_000000000007.jpg"
    assert (recs[0]["image"]["width"], recs[0]["image"]["height"]) == (40, 30)
    assert ctx.notes["skipped_images"] == ["COCO_val2014_000000000008.jpg"]
    assert ctx.counters["missing_image"] == 1


@pytest.mark.exercises("source.okvqa")
def test_okvqa_reads_the_vqa_v2_layout(tmp_path):
    q, a = _vqa_files(tmp_path)
    recs = load("okvqa", {"questions": "q.json", "annotations": "a.json"}, make_ctx(tmp_path))
    assert [r["id"] for r in recs] == ["7", "8"] and recs[0]["source"] == "okvqa"


@pytest.mark.exercises("source.aokvqa")
def test_aokvqa_keeps_choices_rationales_and_the_correct_choice(tmp_path):
    write_json(tmp_path / "aokvqa_v1p0_val.json", [
        {"split": "val", "image_id": 299207, "question_id": "22MexNkBPpdZGX6sxbxVBH",
         "question": "What is the man by the bags awaiting?",
         "choices": ["skateboarder", "train", "delivery", "cab"], "correct_choice_idx": 3,
         "direct_answers": ["ride", "ride", "bus", "taxi", "travelling", "traffic", "taxi",
                            "pickup", "taxi", "taxi"],
         "difficult_direct_answer": False,
         "rationales": ["A train would not be on the street.", "He is waiting for a taxi.",
                        "The man is waiting for a cab."]},
        {"split": "test", "image_id": 1, "question_id": "x", "question": "Why?",
         "choices": ["a", "b"], "direct_answers": [], "rationales": []}])
    recs = load("aokvqa", {"annotations": "aokvqa_v1p0_val.json", "split": "val"},
                make_ctx(tmp_path))
    (rec,) = recs
    qa = rec["qas"][0]
    assert rec["id"] == "299207" and rec["meta"]["image_file"] == "000000299207.jpg"
    assert qa["answer"] == "cab" and qa["choices"][3] == "cab" and qa["correct_choice"] == 3
    assert len(qa["rationales"]) == 3 and len(qa["answers"]) == 10


@pytest.mark.exercises("source.gqa")
def test_gqa_questions_and_scene_graph_objects_relations(tmp_path):
    write_json(tmp_path / "val_balanced_questions.json", {
        "05515938": {"imageId": "2354786", "question": "Is the sky dark?", "answer": "yes",
                     "fullAnswer": "Yes, the sky is dark.",
                     "types": {"structural": "verify", "semantic": "attr",
                               "detailed": "verifyAttr"}}})
    write_json(tmp_path / "val_sceneGraphs.json", {
        "2354786": {"width": 500, "height": 333, "objects": {
            "1": {"name": "sky", "x": 0, "y": 0, "w": 500, "h": 100, "attributes": ["dark"],
                  "relations": [{"name": "above", "object": "2"}]},
            "2": {"name": "road", "x": 0, "y": 200, "w": 500, "h": 140, "attributes": [],
                  "relations": []}}}})
    ctx = make_ctx(tmp_path)
    (rec,) = load("gqa", {"questions": ["val_balanced_questions.json"],
                          "scene_graphs": "val_sceneGraphs.json"}, ctx)
    assert rec["id"] == "2354786" and rec["meta"]["image_file"] == "2354786.jpg"
    assert rec["qas"][0]["answer"] == "yes" and rec["qas"][0]["full_answer"].startswith("Yes")
    assert [(o["category"], o["bbox"], o["attributes"]) for o in rec["objects"]] == [
        ("sky", [0.0, 0.0, 500.0, 100.0], ["dark"]), ("road", [0.0, 200.0, 500.0, 333.0], [])]
    assert rec["relations"] == [{"subject": 0, "predicate": "above", "object": 1}]
    assert ctx.counters["box_outside_image"] == 1


def test_sample_is_seeded_and_keeps_file_order_and_limit_applies_after(tmp_path):
    write_json(tmp_path / "a.json", [
        {"split": "train", "image_id": i, "question_id": str(i), "question": "q",
         "choices": ["a"], "correct_choice_idx": 0, "direct_answers": ["a"], "rationales": []}
        for i in range(50)])
    params = {"annotations": "a.json", "sample": 10}
    one = [r["id"] for r in load("aokvqa", params, make_ctx(tmp_path, seed=1))]
    again = [r["id"] for r in load("aokvqa", params, make_ctx(tmp_path, seed=1))]
    other = [r["id"] for r in load("aokvqa", params, make_ctx(tmp_path, seed=2))]
    assert one == again and one != other and len(one) == 10
    assert one == sorted(one, key=int)
    limited = load("aokvqa", {**params, "limit": 3}, make_ctx(tmp_path, seed=1))
    assert [r["id"] for r in limited] == one[:3]


@pytest.mark.exercises("source.vqa_v2")
def test_vqa_v2_finds_images_named_the_2017_way_when_the_subtype_says_2014(tmp_path):
    _vqa_files(tmp_path)
    make_image(tmp_path / "img" / "000000000007.jpg")
    make_image(tmp_path / "img" / "000000000008.jpg")
    ctx = make_ctx(tmp_path)
    recs = load("vqa_v2", {"questions": "q.json", "annotations": "a.json", "images": "img"}, ctx)
    assert [r["image"]["path"] for r in recs] == ["000000000007.jpg", "000000000008.jpg"]
    assert ctx.notes["image_pattern"] == "{id:012d}.jpg"
