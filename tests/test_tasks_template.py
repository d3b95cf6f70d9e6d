"""The generic ``template`` task: per-layer items, seeded selection, formats, located errors."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from _tasks_util import IMG, cats_record, ctx, task

from vlitc.errors import InputError
from vlitc.formats import FORMATS
from vlitc.records import grounding, image_record, structure_problems


def run(t, records, **kw):
    c = ctx(**kw)
    return list(t.run(records, c)), c


def test_per_caption_makes_one_sample_per_caption_with_full_meta():
    t = task("template", "brief", instruction={"templates": ["Describe the image briefly."]},
             response="{{ caption }}", per="caption")
    rec = cats_record()
    out, c = run(t, [rec])
    assert [s["turns"][1]["content"] for s in out] == rec["captions"]
    s = out[0]
    assert s["id"] == "brief/1/0" and s["task"] == "brief" and s["image"] == IMG
    assert s["turns"][0] == {"role": "user", "content": "<image>\nDescribe the image briefly."}
    assert s["meta"]["record_id"] == "1"
    assert s["meta"]["template"] == {"pool": None, "index": 0, "text": "Describe the image briefly."}
    assert s["meta"]["format"] == "free"
    assert s["meta"]["annotations"] == grounding(rec)
    assert c.counters == {"records": 1, "samples": 3}
    assert all(structure_problems(x) == [] for x in out)


def test_templates_come_from_the_named_pool():
    t = task("template", instruction={"pool": "brief"}, response="{{ caption }}", per="image")
    assert t.references() == {"source": ["coco"], "pool": ["brief"]}
    out, _ = run(t, [cats_record()], pools={"brief": ["Summarize the picture."]})
    assert out[0]["meta"]["template"]["pool"] == "brief"
    assert out[0]["turns"][0]["content"].endswith("Summarize the picture.")


def test_same_seed_same_bytes_other_seed_other_choices():
    pool = [f"Template number {i}." for i in range(10)]
    t = task("template", instruction={"templates": pool}, response="{{ caption }}", per="image")
    recs = [image_record(str(i), "coco", dict(IMG), captions=[f"c{i}a", f"c{i}b"]) for i in range(60)]

    def build(seed):
        return orjson.dumps(list(t.run(recs, ctx(seed=seed))))

    assert build(1) == build(1)
    assert build(1) != build(2)


def test_random_selection_does_not_depend_on_record_order():
    pool = [f"Template number {i}." for i in range(10)]
    t = task("template", instruction={"templates": pool}, response="{{ caption }}", per="caption")
    recs = [image_record(str(i), "coco", dict(IMG), captions=[f"c{i}"]) for i in range(30)]
    fwd = {s["id"]: s["meta"]["template"]["index"] for s in t.run(recs, ctx())}
    rev = {s["id"]: s["meta"]["template"]["index"] for s in t.run(recs[::-1], ctx())}
    assert fwd == rev


@pytest.mark.exercises("task.template")
def test_balanced_selection_uses_every_template_equally():
    pool = [f"Template number {i}." for i in range(7)]
    t = task("template", instruction={"templates": pool}, response="{{ caption }}",
             per="caption", selection="balanced")
    recs = [image_record(str(i), "coco", dict(IMG), captions=["a cat"]) for i in range(70)]
    counts = Counter(s["meta"]["template"]["index"] for s in t.run(recs, ctx()))
    assert counts == {i: 10 for i in range(7)}


def test_per_qa_exposes_question_and_majority_answer_with_short_format():
    t = task("template", instruction={"templates": ["{{ question }}"]}, response="{{ answer }}",
             per="qa", format="short")
    out, _ = run(t, [cats_record()])
    assert [s["turns"][0]["content"] for s in out] == [
        "<image>\nHow many cats are there?\nAnswer the question using a single word or phrase.",
        "<image>\nWhat color is the couch?\nAnswer the question using a single word or phrase.",
    ]
    assert [s["turns"][1]["content"] for s in out] == ["2", "pink"]
    assert [s["id"] for s in out] == ["t/1/q1", "t/1/q2"]


def test_per_object_skips_crowd_and_boxes_round_trip():
    t = task("template", instruction={"templates": ["Where is the {{ category }}?"]},
             response="{{ bbox }}", per="object", format="bbox")
    rec = cats_record()
    out, _ = run(t, [rec])
    assert [s["turns"][0]["content"].split("the ")[1] for s in out] == ["cat?", "cat?", "couch?"]
    bf = FORMATS["bbox"]
    for s, obj in zip(out, [o for o in rec["objects"] if not o["iscrowd"]], strict=True):
        back = bf.decode(s["turns"][1]["content"], 640, 480)
        assert max(abs(a - b) for a, b in zip(back, obj["bbox"], strict=True)) <= bf.tolerance(640, 480)


def test_yes_no_format_skips_answers_that_are_not_yes_or_no():
    rec = image_record("1", "coco", dict(IMG), qas=[
        {"question": "Is it a cat?", "answer": "yes"}, {"question": "What?", "answer": "blue"}])
    t = task("template", instruction={"templates": ["{{ question }}"]}, response="{{ answer }}",
             per="qa", format="yes_no")
    out, c = run(t, [rec])
    assert [s["turns"][1]["content"] for s in out] == ["Yes"]
    assert c.counters["skipped_format"] == 1


def test_record_without_the_needed_layer_is_skipped_and_counted():
    t = task("template", instruction={"templates": ["Describe."]}, response="{{ caption }}")
    out, c = run(t, [image_record("9", "coco", dict(IMG))])
    assert out == [] and c.counters["skipped_missing_caption"] == 1


def test_undefined_instruction_variable_is_a_located_error_naming_template_and_variable(tmp_path):
    (tmp_path / "brief.txt").write_text("# pool\nDescribe the image.\nDescribe {{ captoin }}.\n")
    t = task("template", "brief", instruction={"pool": "brief"}, response="{{ caption }}")
    recipe = {"pools": {"brief": {"type": "list", "file": "brief.txt"}}}
    with pytest.raises(InputError) as e:
        run(t, [cats_record()], tmp_path=tmp_path, recipe=recipe,
            pools={"brief": ["Describe the image.", "Describe {{ captoin }}."]})
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'brief.txt'}:3:1: task 'brief' instruction: ")
    assert "'Describe {{ captoin }}.'" in msg and "undefined variable 'captoin'" in msg
    assert "did you mean 'caption'?" in msg


def test_undefined_response_variable_is_an_input_error():
    t = task("template", instruction={"templates": ["Describe."]}, response="{{ answr }}", per="qa")
    with pytest.raises(InputError, match=r"task 't' response: template '\{\{ answr \}\}': undefined variable 'answr'"):
        run(t, [cats_record()])


def test_runtime_undefined_attribute_is_an_input_error_not_a_traceback():
    t = task("template", instruction={"templates": ["Q: {{ qa.missing_field }}"]},
             response="{{ answer }}", per="qa")
    with pytest.raises(InputError, match="undefined variable"):
        run(t, [cats_record()])


def test_sandbox_refuses_unsafe_attribute_access():
    t = task("template", instruction={"templates": ["{{ question.__class__.__mro__ }}"]},
             response="{{ answer }}", per="qa")
    with pytest.raises(InputError):
        run(t, [cats_record()])


def test_template_syntax_error_is_an_input_error():
    t = task("template", instruction={"templates": ["Describe {{ caption"]}, response="{{ caption }}")
    with pytest.raises(InputError, match="syntax error"):
        run(t, [cats_record()])


def test_a_random_selection_picks_what_the_stable_index_of_its_key_gives():
    """The selector hashes the seed's part of each key once: the same picks as hashing each
    whole key (which earlier releases picked by)."""
    from vlitc.ops.tasks.base import Selector, stable_index, stable_indexer

    for n in (2, 3, 7):
        sel = Selector("random", n, "7:brief_caption")
        keys = [f"{i}/{j}" for i in range(300) for j in range(5)] + ["", "caf\u00e9/\U0001f600"]
        assert [sel.pick(k) for k in keys] == [stable_index(f"7:brief_caption:{k}", n) for k in keys]
        index = stable_indexer("caf\u00e9:", n)
        assert [index(k) for k in keys] == [stable_index(f"caf\u00e9:{k}", n) for k in keys]
