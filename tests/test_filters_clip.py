"""clip_match with a randomly initialised open_clip model saved to and loaded from a local file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _filters_util import caching_ctx, qa

from vlitc.errors import InputError
from vlitc.ops.filters.clip import PROMPT, ClipMatchFilter, texts_for

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model config file and a checkpoint of a random model of that architecture."""
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("clip")
    cfg = d / "vlitc-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("vlitc-tiny-clip", pretrained=None)
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    root = tmp_path / "img"
    root.mkdir()
    for name, colour in (("red.png", (255, 0, 0)), ("blue.png", (0, 0, 255))):
        Image.new("RGB", (48, 40), colour).save(root / name)
    return root


def img(name):
    return {"root": "coco", "path": name, "sha256": name}


def flt(tiny, **params):
    cfg, ckpt = tiny
    return ClipMatchFilter({"model": str(cfg), "pretrained": str(ckpt), "device": "cpu", **params})


def test_scores_equal_a_bare_open_clip_computation_through_the_checkpoint_path(tiny, images, tmp_path):
    import open_clip
    import torch
    from PIL import Image

    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": images})
    s = qa("<image>\nWhat colour?", "Red.", image=img("red.png"))
    stats = flt(tiny, long_text="truncate").measure([s], ctx)
    model, _, pre = open_clip.create_model_and_transforms("vlitc-tiny-clip", pretrained=str(tiny[1]))
    model.eval()
    tok = open_clip.get_tokenizer("vlitc-tiny-clip")
    with torch.no_grad():
        fi = model.encode_image(pre(Image.open(images / "red.png").convert("RGB"))[None])
        ft = model.encode_text(tok([PROMPT + "What colour? Red."]))
    want = torch.nn.functional.cosine_similarity(fi, ft).item()
    assert stats[0]["score"] == pytest.approx(want, abs=1e-4)


def test_many_samples_on_one_image_cost_one_encode_and_a_rebuild_none(tiny, images, tmp_path):
    ctx, caches = caching_ctx(tmp_path, image_roots={"coco": images})
    samples = [qa("<image>\nQ", f"Answer {i}.", sid=str(i), image=img("red.png")) for i in range(5)]
    samples.append(qa("<image>\nQ", "Blue.", sid="b", image=img("blue.png")))
    samples.append(qa("Q", "Text only.", sid="t"))
    stats = flt(tiny).measure(samples, ctx)
    assert ctx.counters["clip_images_encoded"] == 2 and caches["clip-image"].sets == 2
    assert all(-1 <= s["score"] <= 1 for s in stats[:6]) and stats[6] == {"score": None}
    again, _ = caching_ctx(tmp_path, image_roots={"coco": images})
    again._item_cache = ctx._item_cache
    assert flt(tiny).measure(samples, again) == stats
    assert "clip_images_encoded" not in again.counters and again.counters["clip_image_cache_hits"] == 2


@pytest.mark.exercises("filter.clip_match")
def test_long_text_scores_each_exchange_and_aggregates(tiny, images, tmp_path):
    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": images})
    s = qa("<image>\nQ1", "A1 " * 40, "Q2", "A2", image=img("red.png"))
    assert texts_for(s, "turns_mean", "P: ") == ["P: Q1 " + ("A1 " * 40).strip(), "P: Q2 A2"]
    mean = flt(tiny, long_text="turns_mean").measure([s], ctx)[0]
    low = flt(tiny, long_text="turns_min").measure([s], ctx)[0]
    assert len(mean["turn_scores"]) == 2 and mean["turn_scores"] == low["turn_scores"]
    assert low["score"] == pytest.approx(min(low["turn_scores"]), abs=1e-4)
    assert mean["score"] == pytest.approx(float(np.mean(mean["turn_scores"])), abs=1e-4)


def test_min_score_and_top_fraction_decisions_explain_the_drop(tiny):
    stats = [{"score": 0.31}, {"score": 0.12}, {"score": 0.25}, {"score": None}]
    assert flt(tiny, min_score=0.2).decide(stats) == [None, "CLIP score 0.1200 < min 0.2", None, None]
    got = flt(tiny, top_fraction=0.5).decide(stats)
    assert got[0] is None and got[3] is None
    assert got[1] == "CLIP score 0.1200 outside the top 50% (cut-off 0.2500)" and got[2] is None


def test_thresholds_do_not_enter_the_measure_key(tiny):
    a = flt(tiny, min_score=0.2).measure_params()
    assert a == flt(tiny, min_score=0.3).measure_params() == flt(tiny, top_fraction=0.1).measure_params()


def test_missing_checkpoint_file_is_a_located_input_error(tmp_path):
    f = ClipMatchFilter({"model": "ViT-B-32", "pretrained": "weights/missing.pt", "device": "cpu"})
    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": tmp_path})
    with pytest.raises(InputError, match="checkpoint file not found"):
        f.measure([qa("<image>\nQ", "A", image=img("x.png"))], ctx)


def test_unreadable_image_is_dropped_with_its_path(tiny, images, tmp_path):
    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": images})
    f = flt(tiny, min_score=-1)
    stats = f.measure([qa("<image>\nQ", "A", image=img("gone.png"))], ctx)
    assert f.decide(stats) == ["image unreadable: gone.png"]
    assert ctx.counters["missing_image"] == 1


def test_real_coco_photo_scores(tiny, fixtures_dir, tmp_path):
    root = fixtures_dir / "optimum-graphcore/tests/fixtures/tests_samples/COCO"
    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": root})
    s = qa("<image>\nDescribe.", "Two cats sleep on a pink couch.",
           image={"root": "coco", "path": "000000039769.png"})
    stats = flt(tiny).measure([s], ctx)
    assert -1 <= stats[0]["score"] <= 1 and ctx.counters["clip_images_encoded"] == 1


def test_a_multi_image_sample_is_scored_against_each_image_and_gets_their_mean(tiny, images, tmp_path):
    ctx, _ = caching_ctx(tmp_path, image_roots={"coco": images})
    red = qa("<image>\nCompare.", "Red and blue.", sid="r", image=img("red.png"))
    blue = qa("<image>\nCompare.", "Red and blue.", sid="b", image=img("blue.png"))
    both = qa("<image>\n<image>\nCompare.", "Red and blue.", sid="rb",
              image=[img("red.png"), img("blue.png")])
    r, b, rb = flt(tiny).measure([red, blue, both], ctx)
    assert rb["image_scores"] == [r["score"], b["score"]]
    assert rb["score"] == pytest.approx((r["score"] + b["score"]) / 2, abs=1e-4)
    ctx.image_roots = {"coco": tmp_path}  # the second image goes missing
    gone = flt(tiny).measure([qa("<image>\n<image>\nQ", "A", sid="g",
                                 image=[img("red2.png"), img("blue2.png")])], ctx)[0]
    assert gone["score"] is None and gone["missing_image"] == "red2.png, blue2.png"
