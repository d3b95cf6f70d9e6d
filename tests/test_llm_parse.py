"""Parsing generator output: LLaVA blocks, the review paper's JSON dialog, answer-only."""

from __future__ import annotations

import pytest

from vlitc.llm.parse import parse


def test_llava_prompt_pack_example_parses_into_four_exchanges(fixtures_dir):
    text = (fixtures_dir / "LLaVA/playground/data/prompts/conversation/000_conv.txt").read_text()
    turns = parse(text, "llava_qa").turns
    assert len(turns) == 8
    assert turns[0] == {"role": "user", "content": "What color is the fire hydrant in the image?"}
    assert turns[1] == {"role": "assistant", "content": "The fire hydrant in the image is red."}
    assert turns[7]["content"].startswith("The image suggests that the winter season")
    assert "\n\nFor instance," in turns[7]["content"]  # paragraphs survive


def test_llava_blocks_on_one_line_and_a_dangling_question():
    text = "Question: Is it red?\n===\nAnswer: Yes.\n===\nQuestion: Why?"
    assert parse(text, "llava_qa").turns == [{"role": "user", "content": "Is it red?"},
                                             {"role": "assistant", "content": "Yes."}]


@pytest.mark.parametrize("text,reason", [
    ("Sure! Here is a conversation.", "no 'Question:' / 'Answer:' blocks"),
    ("Here you go:\nQuestion:\nA?\n===\nAnswer:\nB", "text before the first question: 'Here you go:'"),
    ("Answer:\nB\n===\nQuestion:\nA?", "turn 1 is from the assistant, expected the user"),
    ("Question:\nA?\n===\nAnswer:\n\n===", "turn 2 is empty"),
])
def test_unparseable_llava_text_says_why(text, reason):
    got = parse(text, "llava_qa")
    assert got.turns is None and got.error == reason


def test_json_dialog_with_repeated_keys_keeps_every_turn_in_order():
    text = '{"User": "Any flowers?", "AI": "No flowers.", "User": "Fruit?", "AI": "Bananas."}'
    assert [t["content"] for t in parse(text, "json_dialog").turns] == [
        "Any flowers?", "No flowers.", "Fruit?", "Bananas."]


@pytest.mark.parametrize("text", [
    '[{"User": "Q1?", "AI": "A1."}, {"User": "Q2?", "AI": "A2."}]',
    'Here it is:\n```json\n[{"user": "Q1?", "assistant": "A1."}, {"user": "Q2?", "assistant": "A2."}]\n```',
    '{"User": "Q1?", "AI": "A1."}\n{"User": "Q2?", "AI": "A2."}',
])
def test_json_dialog_variants(text):
    turns = parse(text, "json_dialog").turns
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "Q1?"), ("assistant", "A1."), ("user", "Q2?"), ("assistant", "A2.")]


@pytest.mark.parametrize("text,reason", [
    ('{"User": "Q?", "AI": "A.", ', "invalid JSON: Expecting property name enclosed in double quotes at character 27"),
    ("no json here", "no JSON dialog found"),
    ('{"User": "Q?", "Bot": "A."}', "unexpected key or value in the dialog: 'Bot'"),
    ('{"AI": "A.", "User": "Q?"}', "turn 1 is from the assistant, expected the user"),
])
def test_unparseable_json_dialog_says_why(text, reason):
    got = parse(text, "json_dialog")
    assert got.turns is None and got.error == reason


def test_answer_only_pairs_with_the_instruction():
    assert parse("  A cat on a couch. ", "answer", "Describe it.").turns == [
        {"role": "user", "content": "Describe it."},
        {"role": "assistant", "content": "A cat on a couch."}]
    assert parse("   ", "answer", "Describe it.").error == "empty answer"


@pytest.mark.parametrize("text,answer", [
    ("Question:\nWhat is listed?\n===\nAnswer:\nTwo items:\nq: the first\na: the second\n===",
     "Two items:\nq: the first\na: the second"),
    ("Question: What does the sign say?\n===\nAnswer: It reads\nQuestion: who goes there?\n===",
     "It reads\nQuestion: who goes there?"),
    ("Q: What is it?\nA: A list.\nA: more of the answer", "A list.\nA: more of the answer"),
    ("Question: What is it?\nAnswer: A note:\nQ: quoted\nA: quoted too", "A note:\nQ: quoted\nA: quoted too"),
])
def test_text_inside_an_answer_that_looks_like_a_label_stays_in_the_answer(text, answer):
    turns = parse(text, "llava_qa").turns
    assert turns is not None and turns[1]["content"] == answer and len(turns) == 2
