"""Text rules: literal samples in, stats and keep decisions out."""

from __future__ import annotations

import pytest
from _filters_util import qa, run

from vlitc.ops.filters.text import (
    LeakageFilter,
    MinWordsFilter,
    RepetitionFilter,
    StructureFilter,
    TruncatedFilter,
    TurnsFilter,
    WordsFilter,
)


@pytest.mark.exercises("filter.min_words")
def test_min_words_drops_short_answers_with_the_count_in_the_reason():
    s = [qa("<image>\nWhat?", "A cat.", sid="a"), qa("What?", "A cat sits on a mat.", sid="b")]
    stats, keep = run(MinWordsFilter({"min": 3}), s)
    assert [x["words"] for x in stats] == [2, 6]
    assert keep == ["2 words < min 3", None]


@pytest.mark.exercises("filter.words")
def test_word_band_per_task_overrides_the_default_band():
    s = [qa("Q", "yes", task="vqa"), qa("Q", "yes", task="detail")]
    f = WordsFilter({"min": 5, "max": 200, "per_task": {"vqa": {"min": 1, "max": 3}}})
    assert run(f, s)[1] == [None, "1 words < min 5"]


def test_min_words_per_task_integer():
    s = [qa("Q", "yes", task="vqa"), qa("Q", "yes", task="caption")]
    assert run(MinWordsFilter({"min": 4, "per_task": {"vqa": 1}}), s)[1] == [None, "1 words < min 4"]


@pytest.mark.exercises("filter.turns")
def test_turn_band_counts_exchanges():
    s = [qa("Q1", "A1", "Q2", "A2", "Q3", "A3"), qa("Q", "A")]
    stats, keep = run(TurnsFilter({"min": 2, "max": 2}), s)
    assert [x["turns"] for x in stats] == [3, 1]
    assert keep == ["3 turns > max 2", "1 turns < min 2"]


@pytest.mark.exercises("filter.structure")
def test_structure_requires_alternation_and_one_leading_placeholder():
    img = {"root": "coco", "path": "1.jpg"}
    good = qa("Describe.", "A cat.", image=img)
    two = qa("Describe.", "A cat <image>.", image=img)
    swapped = {"id": "x", "image": None, "turns": [{"role": "assistant", "content": "Hi"},
                                                  {"role": "user", "content": "Q"}]}
    _, keep = run(StructureFilter({}), [good, two, swapped])
    assert keep[0] is None
    assert keep[1] == "malformed conversation: 2 image placeholders, expected 1"
    assert keep[2].startswith("malformed conversation: turn 0 is 'assistant', expected 'user'")


def test_leakage_finds_template_phrases_case_insensitively():
    s = [qa("Q", "Based on the caption, a dog runs."), qa("Q", "As an AI I think so."),
         qa("Q", "A description of a dog is hard.")]
    stats, keep = run(LeakageFilter({}), s)
    assert stats[0]["leaks"] == ["based on the caption"]
    assert keep[0] == "leaked template phrase: 'based on the caption'"
    assert keep[1] == "leaked template phrase: 'as an ai'"
    assert keep[2] is None  # "a description" is not "the description"


@pytest.mark.exercises("filter.leakage")
def test_leakage_extra_phrases_and_replaced_list():
    s = [qa("Q", "In the picture provided, a dog."), qa("Q", "The description says a dog.")]
    _, keep = run(LeakageFilter({"phrases": ["picture provided"]}), s)
    assert keep == ["leaked template phrase: 'picture provided'", None]
    _, keep = run(LeakageFilter({"extra": ["picture provided"]}), s)
    assert keep == ["leaked template phrase: 'picture provided'",
                    "leaked template phrase: 'the description'"]


@pytest.mark.exercises("filter.repetition")
def test_repetition_drops_looping_answers_only():
    loop = "the cat is on the mat " * 6
    s = [qa("Q", "A black cat sleeps on a red mat near the window.", "Q2", loop)]
    s.append(qa("Q", "A black cat sleeps on a red mat near the window."))
    stats, keep = run(RepetitionFilter({"n": 4, "max_ratio": 0.3}), s)
    assert stats[0]["worst_turn"] == 1 and stats[0]["repetition"] > 0.9
    assert keep[0].startswith("repetitive answer 1: 1.00 of its 4-grams repeat")
    assert stats[1]["repetition"] == 0.0 and keep[1] is None


@pytest.mark.exercises("filter.truncated")
def test_truncated_drops_empty_and_length_cut_answers():
    cut = qa("Q", "A long answer that stops mid", finish_reasons=["length"])
    empty = qa("Q", "  ")
    fine = qa("Q", "Done.", finish_reasons=["stop"])
    _, keep = run(TruncatedFilter({}), [cut, empty, fine])
    assert keep == ["truncated answer: finish reason 'length'",
                    "empty answer in assistant turn(s) [0]", None]


def test_threshold_params_are_keep_params_and_stay_out_of_the_measure_key():
    f = RepetitionFilter({"n": 3, "max_ratio": 0.1})
    assert f.measure_params() == {"n": 3}
    assert WordsFilter({"min": 1, "per_task": {}}).measure_params() == {}


def test_leakage_default_list_holds_the_common_variants():
    leaks = [
        "Based on the provided captions, the man is riding a horse.",
        "According to the bounding box coordinates, the cup is on the left.",
        "As an AI language model, I think the dog is happy.",
        "In the given description, two people stand by a bus.",
        "From the   given   annotations there are three cars.",
    ]
    clean = ["The man is riding a horse along the beach.",
             "In this context, the umbrella protects them from the sun."]
    stats, keep = run(LeakageFilter({}), [qa("Q", t) for t in leaks + clean])
    assert all(k is not None for k in keep[:5]) and keep[5:] == [None, None]
    assert stats[1]["leaks"] == ["according to the bounding box coordinates"]


def test_truncated_reads_cut_off_endings_from_the_text_alone():
    cut = ["The dog is sitting on a red couch next to the",
           "There are two people (one holding an umbrella and the other",
           'The sign reads "Stop here and wait for the',
           "The woman walks her dog along a busy street while people wait at",
           "The kitchen has white cabinets, a stainless steel fridge and a small wooden table near"]
    whole = ["Yes", "Two cats", "The dog is on the couch.", "It says \"STOP\".",
             "A red bus (a double-decker) is parked by the curb!", "About 42"]
    stats, keep = run(TruncatedFilter({}), [qa("Q", t) for t in cut + whole])
    assert all(k and k.startswith("truncated answer 0: ") for k in keep[:5]), keep
    assert keep[5:] == [None] * len(whole)
    assert stats[0]["cut_turns"] == [{"turn": 0, "why": "ends on 'the'"}]
    assert stats[1]["cut_turns"][0]["why"] == "unclosed '('"
    _, off = run(TruncatedFilter({"text": False}), [qa("Q", cut[0])])
    assert off == [None]


def test_structure_finds_parser_separators_left_in_answers():
    bad = [qa("Q", "The cat sleeps.\n===\nQuestion:\nWhat colour is it?"),
           qa("Q", "A red bus.\n==\n"),
           qa("Q", "It is sunny.\nAnswer: yes")]
    good = qa("Question: what is shown?", "A cat on a mat. The score was 2 == 2 in the game.")
    stats, keep = run(StructureFilter({}), [*bad, good])
    assert all(k and "malformed conversation" in k for k in keep[:3]) and keep[3] is None
    assert "turn 1 has a separator line '==='" in stats[0]["problems"]
    assert "turn 1 has a parser label 'Answer:'" in stats[2]["problems"]
    _, off = run(StructureFilter({"separators": False}), bad)
    assert off == [None, None, None]


def test_the_phrase_trie_matches_what_an_alternation_of_the_phrases_matches():
    import re

    from vlitc.ops.filters.text import DEFAULT_LEAKS, expand, trie_pattern

    phrases = sorted({x for p in DEFAULT_LEAKS for x in expand(p)}, key=lambda p: (-len(p), p))
    alternation = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+")
                                                    for p in phrases) + r")(?!\w)")
    trie = re.compile(rf"(?<!\w)(?:{trie_pattern(phrases)})(?!\w)")
    texts = ["based on the provided captions, a dog.", "as an ai language model i cannot see",
             "in the given description\nthe  captions say", "the captionsx and the captions",
             "i'm unable to view the image", "according to the bounding box coordinates [1, 2]"]
    for t in texts:
        assert trie.findall(t) == alternation.findall(t), t
    assert re.fullmatch(trie_pattern(["as an", "as an ai", "a b"]), "as an ai")
    assert re.fullmatch(trie_pattern(["a b"]), "a \t b")
