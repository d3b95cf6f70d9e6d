"""The ``complexity`` filter: strict SCORE parsing, mean of votes, optional floor, indicator."""

from __future__ import annotations

import pytest

from vlitc.llm import session
from vlitc.ops.base import OpContext
from vlitc.ops.filters.complexity import ComplexityFilter, parse_score
from vlitc.quality.indicators import instruction_complexity
from vlitc.records import sample


@pytest.mark.parametrize("text,score", [
    ("Two steps of reasoning.\nSCORE: 7", 7), ("SCORE: 10", 10), ("SCORE:3", 3),
    ("SCORE: 11", None), ("SCORE: 0", None), ("score: 5", None), ("SCORE: 5\nthanks", None),
    ("", None)])
def test_scores_are_parsed_strictly(text, score):
    assert parse_score(text) == score


def _samples():
    return [sample("a", "t", [{"role": "user", "content": "Is there a dog?"},
                              {"role": "assistant", "content": "Yes."}]),
            sample("b", "t", [{"role": "user", "content": "Why might the man be carrying an umbrella?"},
                              {"role": "assistant", "content": "It looks like rain."}])]


@pytest.mark.exercises("filter.complexity")
def test_scores_feed_stats_the_floor_and_the_indicator(tmp_path):
    template = "Rated.\nSCORE: {{ 2 if 'dog' in last_user else 8 }}"
    gens = {"m": {"provider": "mock", "model": "mock-1", "template": template}}
    with session({"generators": gens}, tmp_path) as s:
        ctx = OpContext(seed=1, recipe_dir=tmp_path, step_id="measure:complexity",
                        generators=gens, _client=s.client)
        op = ComplexityFilter({"generator": "m", "min_score": 5})
        stats = op.measure(_samples(), ctx)
    assert [st["complexity"] for st in stats] == [2, 8]
    assert [op.keep(st) for st in stats] == ["instruction complexity 2.0 < 5", None]
    assert ComplexityFilter({"generator": "m"}).keep(stats[0]) is None  # no floor: keep all
    scored = [dict(s, meta={"stats": {"complexity": st}}) for s, st in zip(_samples(), stats, strict=True)]
    assert instruction_complexity(scored)["llm_score"] == 5.0
