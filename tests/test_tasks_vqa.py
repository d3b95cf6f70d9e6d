"""Captions, short-answer VQA and multiple choice: answers in the LLaVA-1.5 formats."""

from __future__ import annotations

import pytest
from _tasks_util import IMG, cats_record, ctx, task

from vlitc.formats import FORMATS, LETTERS
from vlitc.records import image_record

SHORT = "Answer the question using a single word or phrase."
MC = "Answer with the option's letter from the given choices directly."


def vqa_records():
    qs = [("What color is the cat?", "orange", "other"), ("What color is the dog?", "black", "other"),
          ("What color is the sky?", "blue", "other"), ("What color is the car?", "red", "other"),
          ("Is it day?", "yes", "yes/no"), ("Is it night?", "no", "yes/no"),
          ("How many cats?", "2", "number")]
    return [image_record(str(i), "vqa", dict(IMG), qas=[
        {"id": f"q{i}", "question": q, "answers": [a] * 3 + ["maroon"] * (a == "red"), "answer": a,
         "answer_type": t}]) for i, (q, a, t) in enumerate(qs)]


@pytest.mark.exercises("task.vqa")
def test_short_answer_vqa_appends_the_format_prompt():
    out = list(task("vqa", "vqa", instruction={"templates": ["{{ question }}"]}).run(vqa_records(), ctx()))
    assert out[0]["turns"][0]["content"] == f"<image>\nWhat color is the cat?\n{SHORT}"
    assert [s["turns"][1]["content"] for s in out][:2] == ["orange", "black"]
    assert all(FORMATS["short"].problem(s["turns"][1]["content"]) is None for s in out)


def test_vqa_answer_types_filter():
    out = list(task("vqa", answer_types=["number"]).run(vqa_records(), ctx()))
    assert [s["turns"][1]["content"] for s in out] == ["2"]


@pytest.mark.exercises("task.vqa_mc")
def test_multiple_choice_distractors_share_the_answer_type_and_are_never_acceptable():
    recs = vqa_records()
    t = task("vqa_mc", "mc", instruction={"templates": ["{{ question }}"]}, n_choices=3)
    out = list(t.run(recs, ctx(inputs={"source:coco": recs})))
    by_type = {"other": {"orange", "black", "blue", "red"}, "yes/no": {"yes", "no"}}
    for s in out:
        choices, idx = s["meta"]["choices"], s["meta"]["answer_index"]
        rec = next(r for r in recs if r["id"] == s["meta"]["record_id"])
        qa = rec["qas"][0]
        assert choices[idx] == qa["answer"]
        assert s["turns"][1]["content"] == LETTERS[idx]
        assert set(choices) <= by_type[qa["answer_type"]]
        assert "maroon" not in choices and len(set(choices)) == len(choices)
        lines = s["turns"][0]["content"].split("\n")
        assert lines[1] == qa["question"] and lines[-1] == MC
        assert lines[2:-1] == [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    assert {s["meta"]["record_id"] for s in out} == {"0", "1", "2", "3", "4", "5"}  # "2" has no peers


def test_multiple_choice_uses_dataset_choices_when_present():
    rec = image_record("1", "sqa", dict(IMG), qas=[{"question": "Which is a mammal?", "answer": "cat",
                                                   "choices": ["frog", "cat", "crow"]}])
    out = list(task("vqa_mc", choices="dataset").run([rec], ctx()))
    assert out[0]["turns"][1]["content"] == "B"
    assert "A. frog\nB. cat\nC. crow" in out[0]["turns"][0]["content"]


@pytest.mark.exercises("task.brief_caption")
def test_brief_caption_cleans_captions_and_uses_the_default_pool():
    rec = cats_record()
    rec["captions"].append("cat")
    c = ctx()
    out = list(task("brief_caption", "brief").run([rec], c))
    assert [s["turns"][1]["content"] for s in out] == [
        "Two cats sleep on a couch.", "A pair of cats resting.", "Cats on a pink sofa."]
    assert out[0]["meta"]["template"]["pool"] == "default:brief_caption"
    assert c.counters["skipped_short"] == 1


def test_one_sentence_format_on_brief_captions():
    out = list(task("brief_caption", format="one_sentence", per="image").run([cats_record()], ctx()))
    assert len(out) == 1
    assert out[0]["turns"][0]["content"].endswith(FORMATS["one_sentence"].prompt)
    assert FORMATS["one_sentence"].problem(out[0]["turns"][1]["content"]) is None


@pytest.mark.exercises("task.detailed_caption")
def test_detailed_caption_takes_the_longest_long_caption():
    rec = image_record("1", "coco", dict(IMG), captions=[
        "short one here", "a long and careful description of two cats asleep side by side on an old pink couch"])
    out = list(task("detailed_caption", min_words=10).run([rec], ctx()))
    assert out[0]["turns"][1]["content"].startswith("A long and careful")
