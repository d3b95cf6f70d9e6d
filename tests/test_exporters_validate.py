"""Export validation refuses samples a trainer would choke on, and writes nothing when it does."""

from __future__ import annotations

import json

import pytest

from tests._release_util import context, conv, demo_samples, img
from vlitc.ops.exporters.llava import LlavaExporter
from vlitc.ops.exporters.validate import (
    ExportValidationError,
    estimate_tokens,
    llava_record_problems,
    validate_llava_file,
)
from vlitc.records import sample


def _export_fails(tmp_path, samples, **params):
    ctx = context(tmp_path)
    with pytest.raises(ExportValidationError) as err:
        LlavaExporter({"path": "train.json", **params}).export(samples, ctx)
    assert list(ctx.out_dir.iterdir()) == []  # nothing written, no temp file left
    return err.value


def test_an_image_removed_after_a_first_export_fails_the_next(tmp_path, monkeypatch):
    """The image folder's listing an export checks files against lasts one step: a file
    removed since an earlier step's export (in the same process) is missing for the next one,
    and a name that is a folder is no image file."""
    from vlitc.run import heap

    monkeypatch.setattr(heap, "trim_heap", lambda: None)  # (a full collection of this process)
    samples = demo_samples(tmp_path)
    ctx = context(tmp_path)
    LlavaExporter({"path": "first.json"}).export(samples, ctx)
    (ctx.out_dir / "first.json").unlink()
    heap.end_step()
    gone = samples[0]["image"]
    path = ctx.image_path(gone)
    path.unlink()
    (path.parent / "folder.png").mkdir()
    folder = conv("caption/f/0", "caption", "Describe.", "A folder.", img("folder.png"))
    err = _export_fails(tmp_path, [*samples, folder])
    assert samples[0]["id"] in err.problems and "caption/f/0" in err.problems
    assert "image file not found" in str(err)


def test_missing_image_file_fails_listing_the_id(tmp_path):
    samples = demo_samples(tmp_path)
    samples.append(conv("caption/z/0", "caption", "Describe.", "Gone.", img("missing.png")))
    err = _export_fails(tmp_path, samples)
    assert list(err.problems) == ["caption/z/0"]
    assert "image file not found" in str(err) and "caption/z/0" in str(err)


def test_two_image_placeholders_fail(tmp_path):
    samples = demo_samples(tmp_path)
    samples[0]["turns"][1]["content"] = "<image> again"
    err = _export_fails(tmp_path, samples)
    assert err.problems == {"caption/a/0": ["2 image placeholders, expected 1"]}


def test_roles_that_do_not_alternate_fail(tmp_path):
    bad = sample("bad/0", "t", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    err = _export_fails(tmp_path, demo_samples(tmp_path) + [bad])
    assert "turn 1 is 'user', expected 'assistant'" in err.problems["bad/0"][0]


def test_context_budget_drops_nothing_but_fails_over_long_samples(tmp_path):
    samples = demo_samples(tmp_path)
    samples[3]["turns"][1]["content"] = "word " * 100
    err = _export_fails(tmp_path, samples, max_tokens=50, tokens_per_word=1.5)
    assert err.problems == {"text/0": ["about 156 tokens, over the budget of 50"]}


def test_estimate_tokens_counts_words_and_image_cost():
    s = conv("x", "t", "one two three", "four", img("a.png"))
    assert estimate_tokens(s, 2.0, image_tokens=576) == 8 + 576


def test_error_lists_at_most_twenty_ids_then_a_count(tmp_path):
    samples = [conv(f"m/{i:02d}", "t", "q", "a", img(f"none{i}.png")) for i in range(25)]
    err = _export_fails(tmp_path, samples)
    assert "m/19" in str(err) and "m/20" not in str(err) and "and 5 more" in str(err)


def test_failing_export_keeps_a_previous_good_file_intact(tmp_path):
    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    LlavaExporter({"path": "train.json"}).export(samples, ctx)
    before = (ctx.out_dir / "train.json").read_bytes()
    samples.append(conv("bad", "t", "q", "a", img("missing.png")))
    with pytest.raises(ExportValidationError):
        LlavaExporter({"path": "train.json"}).export(samples, ctx)
    assert (ctx.out_dir / "train.json").read_bytes() == before
    assert sorted(p.name for p in ctx.out_dir.iterdir()) == ["train.json"]


def test_llava_record_checks_from_roles_and_placeholders(tmp_path):
    good = {"id": "1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}
    assert llava_record_problems(good) == []
    assert llava_record_problems({**good, "conversations": good["conversations"][::-1]})[0] == \
        "turn 0 is from 'gpt', expected 'human'"
    text = {"id": "2", "conversations": good["conversations"]}
    assert llava_record_problems(text) == ["text-only record has an image placeholder"]
    path = tmp_path / "d.json"
    path.write_text(json.dumps([good, text]))
    with pytest.raises(ExportValidationError, match="2: text-only"):
        validate_llava_file(path)
