"""Multi-turn packing and text-only pass-through."""

from __future__ import annotations

import pytest
from _tasks_util import cats_record, ctx, task

from vlitc.ops.registry import get
from vlitc.records import IMAGE_TOKEN, image_record, structure_problems


def singles():
    rec = cats_record()
    c = ctx(inputs={"source:coco": [rec]})
    vqa = list(task("vqa", "vqa").run([rec], c))
    cnt = list(task("counting", "count").run([rec], c))
    return {"task:vqa": vqa, "task:count": cnt}


def pack(**params):
    return get("task", "pack")(params, "conv")


def test_pack_makes_one_conversation_with_one_placeholder():
    inputs = singles()
    p = pack(tasks=["vqa", "count"], max_turns=10)
    assert p.references() == {"task": ["vqa", "count"]}
    out = list(p.run([], ctx(inputs=inputs)))
    assert len(out) == 1
    s = out[0]
    assert structure_problems(s) == []
    assert len(s["turns"]) == 8  # 2 VQA + 2 counting, as pairs
    assert sum(t["content"].count(IMAGE_TOKEN) for t in s["turns"]) == 1
    assert sorted(s["meta"]["parts"]) == sorted(x["id"] for v in inputs.values() for x in v)
    assert s["meta"]["record_id"] == "1" and s["meta"]["annotations"]["objects"]


def test_pack_respects_max_turns_and_token_budget():
    inputs = singles()
    out = list(pack(tasks=["vqa", "count"], max_turns=3, min_turns=1).run([], ctx(inputs=inputs)))
    assert [len(s["turns"]) // 2 for s in out] == [3, 1]
    out = list(pack(tasks=["vqa", "count"], max_tokens=40, min_turns=1).run([], ctx(inputs=inputs)))
    for s in out:
        assert sum((len(t["content"]) + 3) // 4 for t in s["turns"]) <= 40 + 2  # placeholder added after


@pytest.mark.exercises("task.pack")
def test_pack_is_deterministic_for_a_seed():
    inputs = singles()
    a = list(pack(tasks=["vqa", "count"]).run([], ctx(inputs=inputs)))
    b = list(pack(tasks=["vqa", "count"]).run([], ctx(inputs=inputs)))
    assert a == b


@pytest.mark.exercises("task.text_only")
def test_text_only_conversations_pass_through_with_roles_mapped():
    recs = [image_record("t1", "chat", None, conversations=[{"id": "t1", "turns": [
                {"role": "human", "content": "Write a haiku."}, {"role": "gpt", "content": "Leaves fall."}]}]),
            image_record("t2", "chat", None, conversations=[{"id": "t2", "turns": [
                {"role": "human", "content": "<image>\nHi"}, {"role": "gpt", "content": "Hello"}]}]),
            cats_record()]
    c = ctx()
    out = list(task("text_only").run(recs, c))
    assert [s["turns"] for s in out] == [[{"role": "user", "content": "Write a haiku."},
                                          {"role": "assistant", "content": "Leaves fall."}]]
    assert out[0]["image"] is None and structure_problems(out[0]) == []
    assert c.counters["skipped_image_placeholder"] == 1 and c.counters["skipped_has_image"] == 1
