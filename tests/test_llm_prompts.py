"""Context rendering (LLaVA's exact box format, the review paper's description, region focus)
and prompt packs (structure, seeded example draws)."""

from __future__ import annotations

import json
import random

import pytest

from tests._llm_util import RECORD
from vlitc.boxes import from_normalized
from vlitc.errors import InputError
from vlitc.llm.context import render
from vlitc.llm.parse import parse
from vlitc.llm.prompts import load_pack, pack_files

PACKS = {"llava/conversation": "llava_qa", "llava/complex": "llava_qa", "llava/detail": "answer",
         "review/negative": "json_dialog", "review/multiturn": "json_dialog",
         "review/knowledge": "json_dialog", "review/region": "json_dialog"}


def test_llava_context_matches_the_llava_caps_boxes_table(fixtures_dir):
    table = fixtures_dir / "LLaVA/llava/eval/table/caps_boxes_coco2014_val_80.jsonl"
    lines = table.read_text().splitlines()
    assert len(lines) == 80
    for line in lines:
        row = json.loads(line)
        w, h = 640, 427
        rec = {"id": row["id"], "image": {"width": w, "height": h}, "captions": row["captions"],
               "objects": [{"category": o["category"], "bbox": from_normalized(o["bbox"], w, h)}
                           for o in row["instances"]]}
        # what LLaVA's GPT-4 prompts hold: captions, a blank line, "category: [x1, y1, x2, y2]"
        want = "\n".join(row["captions"]) + "\n\n" + "\n".join(
            f"{o['category']}: {o['bbox']}" for o in row["instances"])
        # (an image without objects ends after its captions: no trailing blank lines)
        assert render(rec, "llava") == want.rstrip("\n")


def test_llava_context_prints_boxes_with_three_decimals():
    assert render(RECORD, "llava") == (
        "Two cats sleep on a pink couch.\nA pair of cats lying next to remotes.\n\n"
        "cat: [0.019, 0.108, 0.494, 0.979]\ncat: [0.537, 0.05, 1.0, 0.775]\n"
        "remote: [0.062, 0.15, 0.275, 0.246]")


def test_review_context_reads_like_the_paper():
    assert render(RECORD, "review") == (
        "This is a picture which can be described as Two cats sleep on a pink couch. A pair of cats "
        "lying next to remotes. The image contains 2 cat, 1 remote. The image also contains a number "
        "of question and answer pairs: 'Q: How many cats are there? A: 2.'. The following characters "
        "can be recognized in the image: SONY.")


def test_region_context_marks_the_focus_box():
    text = render(RECORD, "region", focus={"label": "remote", "bbox": [40.0, 72.0, 176.0, 118.0]})
    assert text.endswith("A square box marks remote at [0.062, 0.15, 0.275, 0.246] "
                         "(x1, y1, x2, y2, normalised to the image size).")
    assert text.startswith("This is a picture which can be described as Two cats sleep")


def test_captions_only_record_has_no_trailing_blank_line():
    assert render({"id": "1", "captions": ["A dog."]}, "llava") == "A dog."


def test_unknown_context_template_lists_the_builtin_ones():
    with pytest.raises(InputError, match="built-in templates: llava, none, region, review"):
        render(RECORD, "lava")


@pytest.mark.parametrize("name,fmt", sorted(PACKS.items()))
def test_every_builtin_pack_loads_and_its_examples_parse(name, fmt):
    pack = load_pack(name)
    assert pack.system and len(pack.examples) >= 3
    for ctx, resp in pack.examples:
        assert ctx and parse(resp, fmt, "Describe the image.").turns, resp[:80]


def test_conversation_pack_has_ten_examples_in_llava_context_format():
    pack = load_pack("llava/conversation")
    assert len(pack.examples) == 10
    for ctx, _ in pack.examples:
        caps, boxes = ctx.split("\n\n")
        assert all(": [" in line for line in boxes.splitlines())


def test_examples_are_drawn_with_the_seed_per_item():
    pack = load_pack("llava/conversation")
    a, ca = pack.messages("ctx", 2, random.Random("1:conv:39769"))
    b, cb = pack.messages("ctx", 2, random.Random("1:conv:39769"))
    others = {tuple(pack.messages("ctx", 2, random.Random(f"1:conv:{i}"))[1]) for i in range(20)}
    assert a == b and ca == cb and len(ca) == 2 and len(others) > 5
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert a[-1]["content"] == "ctx" and a[1]["content"] == pack.examples[ca[0]][0]


def test_user_pack_next_to_the_recipe_with_a_missing_response_is_located(tmp_path):
    pack = tmp_path / "mine"
    (pack / "examples").mkdir(parents=True)
    (pack / "system.txt").write_text("Be brief.")
    (pack / "examples" / "000_context.txt").write_text("A cat.")
    with pytest.raises(InputError, match=r"000_response.txt: example 000 has no response file"):
        load_pack("mine", tmp_path)
    (pack / "examples" / "000_response.txt").write_text("A cat indeed.")
    assert load_pack("mine", tmp_path).examples == (("A cat.", "A cat indeed."),)
    assert [p.name for p in pack_files("mine", tmp_path)] == [
        "system.txt", "000_context.txt", "000_response.txt"]


def test_llava_prompt_folder_loads_as_a_pack(fixtures_dir, tmp_path):
    folder = fixtures_dir / "LLaVA/playground/data/prompts/conversation"
    pack = load_pack(str(folder), tmp_path)  # an absolute folder, as a recipe may name it
    system = (folder / "system_message.txt").read_text(encoding="utf-8").strip()
    assert pack.system == system and pack.path == folder.resolve()
    assert pack.examples == (((folder / "000_caps.txt").read_text(encoding="utf-8").strip(),
                              (folder / "000_conv.txt").read_text(encoding="utf-8").strip()),)
    # LLaVA's conversation examples are in the format the llava_qa parser reads
    turns = parse(pack.examples[0][1], "llava_qa", None).turns
    assert turns[0] == {"role": "user", "content": "What color is the fire hydrant in the image?"}
    msgs, chosen = pack.messages("ctx", 2, random.Random(0))
    assert chosen == [0] and [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert [p.name for p in pack_files(str(folder), tmp_path)] == [
        "system_message.txt", "000_caps.txt", "000_conv.txt"]


def test_llava_prompt_folder_next_to_the_recipe_with_a_missing_conv_is_located(tmp_path):
    pack = tmp_path / "prompts" / "conversation"
    pack.mkdir(parents=True)
    (pack / "system_message.txt").write_text("Design a conversation.")
    (pack / "000_caps.txt").write_text("A cat on a mat.")
    (pack / "notes.md").write_text("not an example")
    with pytest.raises(InputError, match=r"000_conv.txt: example 000 has no response file"):
        load_pack("prompts/conversation", tmp_path)
    (pack / "000_conv.txt").write_text("Question:\nWhat is on the mat?\n===\nAnswer:\nA cat.")
    assert load_pack("prompts/conversation", tmp_path).examples == (
        ("A cat on a mat.", "Question:\nWhat is on the mat?\n===\nAnswer:\nA cat."),)


VISION_PACKS = {"sharegpt4v/caption": "answer", "allava/caption_qa": "llava_qa",
                "lvis4v/conversation": "llava_qa", "region/focus": "llava_qa",
                "minigpt4/describe": "answer", "vigc/correct": "answer"}


@pytest.mark.parametrize("name,fmt", sorted(VISION_PACKS.items()))
def test_vision_packs_load_with_their_instruction_and_their_examples_parse(name, fmt):
    pack = load_pack(name)
    assert pack.system and pack.examples
    assert bool(pack.user) == (name != "vigc/correct")  # the correction pack has no instruction
    assert "attached" in pack.system  # says the examples describe their image in words
    for ctx, resp in pack.examples:
        assert "[The image shows:" in ctx and parse(resp, fmt, "Describe the image.").turns
    assert (pack_files(name)[1].name == "user.txt") == bool(pack.user)  # in the step key


def _all_packs() -> list[str]:
    from vlitc.llm.context import TEMPLATES_ROOT

    return sorted(str(p.parent.relative_to(TEMPLATES_ROOT)) for p in TEMPLATES_ROOT.rglob("system.txt"))


@pytest.mark.parametrize("name", _all_packs())
def test_examples_quote_only_text_their_context_contains(name):
    """An example that quotes scene text ("HEINZ") its context does not hold teaches a model
    to invent text: every quoted run of capitals or digits in a response is in its context."""
    import re

    for ctx, resp in load_pack(name).examples:
        for quoted in re.findall(r'\\?"([^"\\]{2,40})\\?"', resp):
            if quoted == "AI":  # the JSON dialog's key
                continue
            if re.fullmatch(r"[A-Z0-9 $.,'&-]+", quoted) and any(c.isalnum() for c in quoted):
                assert quoted in ctx, (name, quoted)


def test_review_packs_hold_about_ten_examples_as_the_paper_does():
    for name in ("review/negative", "review/multiturn", "review/knowledge", "review/region"):
        assert len(load_pack(name).examples) >= 10, name
