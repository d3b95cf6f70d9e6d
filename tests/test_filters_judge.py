"""LLM judge through the generator layer's mock provider: votes, strict parsing, caching."""

from __future__ import annotations

import pytest
from _filters_util import qa

from vlitc.llm import session
from vlitc.ops.base import OpContext
from vlitc.ops.filters.judge import JudgeFilter, parse_verdict

# the mock renders this Jinja template per vote: dogs are wrong, vote 2 on a cat is unparsable
TEMPLATE = (
    "{% if 'dog' in last_user %}There is no dog in the description.\nVERDICT: incorrect"
    "{% elif 'cat' in last_user and index == 2 %}I think it is fine, verdict correct"
    "{% else %}All claims are supported.\nVERDICT: correct{% endif %}"
)
GENS = {"judge": {"provider": "mock", "model": "mock", "template": TEMPLATE}}


def judged(tmp_path, samples, **params):
    with session({"generators": GENS}, tmp_path / "llm") as s:
        ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id="measure:judge", generators=GENS,
                        _client=s.client)
        f = JudgeFilter({"generator": "judge", **params})
        stats = f.measure(samples, ctx)
        calls = len(s.client("judge").provider().calls)
    return f, stats, calls


SAMPLES = [
    qa("<image>\nWhat is on the couch?", "Two cats.", sid="a", context="Two cats on a pink couch."),
    qa("<image>\nWhat is on the couch?", "A dog.", sid="b", context="Two cats on a pink couch."),
    qa("<image>\nWhat is it?", "A remote.", sid="c",
       annotations={"objects": [{"category": "remote", "bbox": [1, 2, 3, 4], "iscrowd": False}]}),
]


@pytest.mark.exercises("filter.judge")
def test_majority_of_strictly_parsed_votes_decides_and_the_reason_counts_them(tmp_path):
    f, stats, calls = judged(tmp_path, SAMPLES)
    assert calls == 9  # 3 samples x 3 votes
    assert stats[0]["votes"] == ["correct", "correct", "unparsed"]
    assert stats[1]["votes"] == ["incorrect"] * 3
    assert f.decide(stats) == [None, "judge: 3 of 3 votes incorrect (0 correct)", None]


def test_rebuild_makes_no_calls_and_policy_changes_need_no_measure(tmp_path):
    _, first, _ = judged(tmp_path, SAMPLES)
    f, again, calls = judged(tmp_path, SAMPLES, unparsed="incorrect", tie="keep")
    assert calls == 0 and again == first
    assert f.measure_params() == JudgeFilter({"generator": "judge"}).measure_params()
    assert f.keep(first[0]) is None  # 2 correct vs 1 unparsed-as-incorrect


def test_unparsed_policy_and_ties():
    f = JudgeFilter({"generator": "g", "votes": 2})
    assert f.keep({"votes": ["correct", "incorrect"]}) == "judge split 1-1 (ties drop)"
    assert JudgeFilter({"generator": "g", "tie": "keep"}).keep({"votes": ["correct", "incorrect"]}) is None
    assert f.keep({"votes": ["unparsed", "unparsed"]}) == "judge split 0-0, 2 unparsed (ties drop)"
    assert JudgeFilter({"generator": "g", "unparsed": "correct"}).keep({"votes": ["unparsed"]}) is None


def test_the_judge_sees_the_generator_context_or_the_annotations():
    f = JudgeFilter({"generator": "g"})
    r = f.request(SAMPLES[0])
    assert r.n == 3 and "Two cats on a pink couch." in r.messages[1]["content"]
    assert "Assistant: Two cats." in r.messages[1]["content"]
    assert "remote: [1.0, 2.0, 3.0, 4.0]" in f.request(SAMPLES[2]).messages[1]["content"]
    assert f.references() == {"generator": ["g"]}


@pytest.mark.parametrize("text,want", [
    ("Looks right.\nVERDICT: correct", "correct"),
    ("VERDICT: incorrect\n", "incorrect"),
    ("verdict: correct", "unparsed"),
    ("VERDICT: correct.", "unparsed"),
    ("VERDICT: incorrect\nVERDICT: correct", "unparsed"),
    ("VERDICT: correct\nbecause it is", "unparsed"),
    ("", "unparsed"),
    ("VERDICT: mostly correct", "unparsed"),
])
def test_verdicts_are_parsed_strictly(text, want):
    assert parse_verdict(text) == want
