"""The ``expand`` pool: LLM paraphrases of seed instructions, deduplicated, cached, placeholders kept."""

from __future__ import annotations

import pytest
from _tasks_util import ctx

from vlitc.ops.pools import dedup_exact, parse_lines
from vlitc.ops.registry import get

REPLIES = [
    "1. Describe the picture in a few words.\n2. Give a brief summary of this image.\n"
    "3. describe the picture in a few words\n4. Briefly describe {{ caption }} here.",
    "- Summarize what the photo shows.\n- Give a brief summary of this image!\n- Tell me about {{ nope }}.",
]


@pytest.fixture
def llm(tmp_path):
    from vlitc.llm import session

    recipe = {"generators": {"para": {"provider": "mock", "model": "mock-1", "responses": REPLIES}}}
    with session(recipe, tmp_path / "llm") as s:
        yield s


def expand(**params):
    params.setdefault("generator", "para")
    return get("pool", "expand")(params, "brief_x")


def test_parse_lines_strips_numbering_bullets_and_quotes():
    assert parse_lines('1. "Describe it well."\n- Summarize the image\n* ok\nHere are some:\n') == [
        "Describe it well.", "Summarize the image"]


def test_exact_dedup_ignores_case_spacing_and_final_punctuation():
    assert dedup_exact(["Describe it.", "describe  it", "Describe it!", "Other one."]) == [
        "Describe it.", "Other one."]


@pytest.mark.exercises("pool.expand")
def test_expansion_dedups_keeps_seeds_and_rejects_unknown_placeholders(llm, monkeypatch):
    import vlitc.ops.pools as pools

    monkeypatch.setattr(pools, "dedup_similar", lambda texts, threshold, keep_first=0: texts)
    p = expand(seeds=["Describe the image briefly. {{ caption }}"], n=10, per_request=4)
    assert p.references() == {"generator": ["para"]}
    c = ctx(client=llm.client("para"))
    out = p.templates(c)
    assert out[0] == "Describe the image briefly. {{ caption }}"
    new = out[1:]
    assert len(new) == len(set(map(str.lower, new)))
    assert "Tell me about {{ nope }}." not in new
    assert set(new) <= {"Describe the picture in a few words.", "Give a brief summary of this image.",
                        "Briefly describe {{ caption }} here.", "Summarize what the photo shows."}
    assert c.counters["bad_placeholders"] >= 1 and c.counters["exact_duplicates"] >= 1


def test_rebuilding_an_expansion_makes_no_new_calls(llm, monkeypatch):
    import vlitc.ops.pools as pools

    monkeypatch.setattr(pools, "dedup_similar", lambda texts, threshold, keep_first=0: texts)
    p = expand(seeds=["Describe the image."], n=3, include_seeds=False)
    first = p.templates(ctx(client=llm.client("para")))
    calls = len(llm.client("para").provider().calls)
    assert p.templates(ctx(client=llm.client("para"))) == first
    assert len(llm.client("para").provider().calls) == calls
    assert "Describe the image." not in first


def test_seeds_can_come_from_another_pool(llm, monkeypatch):
    import vlitc.ops.pools as pools

    monkeypatch.setattr(pools, "dedup_similar", lambda texts, threshold, keep_first=0: texts)
    p = expand(seeds={"pool": "brief"}, n=2)
    assert p.references() == {"generator": ["para"], "pool": ["brief"]}
    out = p.templates(ctx(client=llm.client("para"), pools={"brief": ["Describe the image."]}))
    assert out[0] == "Describe the image." and len(out) == 3


@pytest.mark.slow
def test_embedding_dedup_drops_paraphrases_above_the_threshold():
    from vlitc.ops.pools import dedup_similar

    texts = ["Describe the image briefly.", "Briefly describe the image.", "How many dogs are there?"]
    assert dedup_similar(texts, 0.9) == ["Describe the image briefly.", "How many dogs are there?"]
    assert dedup_similar(texts, 0.999) == texts
