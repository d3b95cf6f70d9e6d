"""Decontamination against evaluation sets (POPE fixture files read in place; Karpathy, VQA v2,
MMBench and SEED-Bench files written here in their published layouts) and the image checks."""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest
from _filters_util import caching_ctx, qa, run

from vlitc.ops.filters.decontam import DecontaminateFilter, coco_name_id, norm_words
from vlitc.ops.filters.imagecheck import ImageCheckFilter

POPE = "POPE/output/coco/coco_pope_random.json"
POPE_ADV = "POPE/output/coco/coco_pope_adversarial.json"
QA = "LLaVA/playground/data/coco2014_val_gpt4_qa_30x3.jsonl"


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def coco(name):
    return {"root": "coco", "path": name}


def pope_filter(fixtures_dir, **kw):
    return DecontaminateFilter({"evals": {
        "pope": {"kind": "pope", "file": [str(fixtures_dir / POPE), str(fixtures_dir / POPE_ADV)]}},
        **kw})


def test_every_planted_pope_image_and_question_is_found_and_a_clean_build_passes(fixtures_dir,
                                                                               tmp_path):
    pope = rows(fixtures_dir / POPE) + rows(fixtures_dir / POPE_ADV)
    pope_images = {coco_name_id(r["image"]) for r in pope}
    real = rows(fixtures_dir / QA)
    # one of the 30 LLaVA-Bench images is also a POPE image: a real overlap the filter reports
    overlap = {r["id"] for r in real if str(int(r["id"])) in pope_images}
    assert len(overlap) == 1
    clean = [qa(r["instruction"], r["output"], sid=f"clean/{i}", image=coco(r["image"]))
             for i, r in enumerate(real) if r["id"] not in overlap]
    rng = random.Random(0)
    picks = rng.sample(pope, 40)
    on_image = [qa("Describe the scene in detail.", "A busy street with cars.", sid=f"img/{i}",
                   image=coco(r["image"])) for i, r in enumerate(picks[:20])]
    questions = [qa(r["text"], r["label"].capitalize() + ".", sid=f"q/{i}",
                    image=coco(real[0]["image"] if real[0]["id"] not in overlap else real[3]["image"]))
                 for i, r in enumerate(picks[20:])]
    both = [qa(r["text"], "Yes.", sid=f"both/{i}", image=coco(r["image"]))
            for i, r in enumerate(rng.sample(pope, 5))]
    planted = on_image + questions + both
    ctx, _ = caching_ctx(tmp_path)
    stats, keep = run(pope_filter(fixtures_dir), clean + planted, ctx)
    assert keep[:len(clean)] == [None] * len(clean)
    assert all(k is not None and k.startswith("in evaluation set pope: ") for k in keep[len(clean):])
    assert {f["by"] for s in stats[len(clean):len(clean) + 20] for f in s["contaminated"]} == {"image id"}
    assert all(f["by"] == "question" and f["overlap"] == 1.0
               for s in stats[len(clean) + 20:len(clean) + 40] for f in s["contaminated"])
    whole = [qa(r["instruction"], r["output"], sid=f"r/{i}", image=coco(r["image"]))
             for i, r in enumerate(real)]
    _, again = run(pope_filter(fixtures_dir), whole, ctx)
    assert sum(k is not None for k in again) == 3  # the three questions on the shared image


@pytest.mark.exercises("filter.decontaminate")
def test_question_overlap_is_normalised_and_short_questions_are_not_compared(fixtures_dir, tmp_path):
    ev = tmp_path / "eval.jsonl"
    ev.write_text("\n".join(json.dumps(r) for r in [
        {"q": "What is the man in the red shirt holding in his left hand?", "img": "x.jpg"},
        {"q": "Why?", "img": "y.jpg"}]) + "\n")
    f = DecontaminateFilter({"evals": {"mine": {"kind": "file", "file": str(ev),
                                                "columns": {"question": "q", "image": "img"}}}})
    hit = qa("<image>\nQuestion -- what is the MAN in the red shirt holding in his left hand??", "A cup.")
    near = qa("What is the man in the red shirt holding?", "A cup.")
    short = qa("Why?", "Because.")
    stats, keep = run(f, [hit, near, short], caching_ctx(tmp_path)[0])
    assert keep[0] == ("in evaluation set mine: question 'What is the man in the red shirt holding "
                       "in his left hand?' (100% of its 8-grams)")
    assert keep[1] is None and keep[2] is None
    assert norm_words("<image>\nA,  b!") == ["a", "b"]


def _pattern(seed: int, size=(160, 120)):
    from PIL import Image

    rs = np.random.RandomState(seed)
    small = (rs.rand(6, 8, 3) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def test_images_match_by_sha256_and_perceptual_hash_per_evaluation_set(tmp_path):
    pytest.importorskip("imagehash", reason="needs the images extra")
    evals, build = tmp_path / "eval_images", tmp_path / "build"
    evals.mkdir()
    build.mkdir()
    for i in range(4):
        _pattern(i).save(evals / f"e{i}.png")
    (build / "copy.png").write_bytes((evals / "e0.png").read_bytes())  # the same bytes
    _pattern(1).resize((320, 240)).save(build / "resized.jpg", quality=70)  # re-encoded, resized
    _pattern(9).save(build / "other.png")
    seed_json = tmp_path / "seed.json"
    seed_json.write_text(json.dumps({"questions": [
        {"question": "Which object is closest to the camera?", "data_id": f"e{i}.png",
         "question_id": str(i)} for i in range(4)]}))
    buf = io.BytesIO()
    _pattern(2).save(buf, format="PNG")
    tsv = tmp_path / "mmbench.tsv"
    tsv.write_text("index\tquestion\tA\tB\tanswer\timage\n"
                   f"7\tWhat is shown in the picture?\tcat\tdog\tA\t{base64.b64encode(buf.getvalue()).decode()}\n")
    (build / "mm.png").write_bytes(buf.getvalue())
    f = DecontaminateFilter({"evals": {
        "seed": {"kind": "seed_bench", "file": str(seed_json), "images": str(evals)},
        "mmbench": {"kind": "mmbench", "file": str(tsv)}}, "check": ["image"]})
    ctx, caches = caching_ctx(tmp_path, image_roots={"b": build})
    samples = [qa("Q", "A.", sid=n, image={"root": "b", "path": n})
               for n in ("copy.png", "resized.jpg", "other.png", "mm.png")]
    stats, keep = run(f, samples, ctx)
    assert [s["contaminated"][0]["by"] if s["contaminated"] else None for s in stats] == \
        ["sha256", "perceptual hash", None, "sha256"]
    assert keep[0] == "in evaluation set seed: sha256 'e0.png'"
    assert keep[1].startswith("in evaluation set seed: perceptual hash 'e1.png' (distance ")
    assert keep[3] == "in evaluation set mmbench: sha256 'row 7'; seed: sha256 'e2.png'"
    assert caches["image-facts"]  # image facts are remembered by content


def test_karpathy_test_ids_and_vqa_test_questions(tmp_path):
    kp = tmp_path / "dataset_coco.json"
    kp.write_text(json.dumps({"images": [
        {"filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895, "split": "test"},
        {"filename": "COCO_val2014_000000522418.jpg", "cocoid": 522418, "split": "train"}]}))
    vq = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    vq.write_text(json.dumps({"questions": [
        {"image_id": 262144, "question": "What color is the fire hydrant on the corner?",
         "question_id": 1}]}))
    f = DecontaminateFilter({"evals": {"karpathy": {"kind": "karpathy", "file": str(kp)},
                                       "vqa": {"kind": "vqa_v2", "file": str(vq)}}})
    samples = [qa("Q", "A.", image=coco("train2014/COCO_train2014_000000391895.jpg")),
               qa("Q", "A.", image=coco("000000522418.jpg")),
               qa("What color is the fire hydrant on the corner?", "Red.", image=coco("a.jpg")),
               qa("Q", "A.", image=coco("000000262144.jpg"))]
    _, keep = run(f, samples, caching_ctx(tmp_path)[0])
    assert keep[0] == "in evaluation set karpathy: image id '391895'"
    assert keep[1] is None
    assert keep[2].startswith("in evaluation set vqa: question ")
    assert keep[3] == "in evaluation set vqa: image id '262144'"


@pytest.mark.exercises("filter.image_check")
def test_image_check_drops_small_off_band_and_blank_images(tmp_path):
    from PIL import Image

    root = tmp_path / "img"
    root.mkdir()
    _pattern(0, (640, 480)).save(root / "ok.png")
    _pattern(1, (60, 40)).save(root / "tiny.png")
    _pattern(2, (1000, 100)).save(root / "strip.png")
    Image.new("RGB", (640, 480), (250, 250, 250)).save(root / "blank.png")
    f = ImageCheckFilter({"min_width": 100, "min_height": 100, "aspect": {"min": 0.25, "max": 4}})
    ctx, _ = caching_ctx(tmp_path, image_roots={"c": root})
    samples = [qa("Q", "A.", sid=n, image={"root": "c", "path": n})
               for n in ("ok.png", "tiny.png", "strip.png", "blank.png", "gone.png")]
    samples.append(qa("Q", "A.", sid="text"))
    _, keep = run(f, samples, ctx)
    assert keep[0] is None and keep[5] is None
    assert keep[1] == "image tiny.png: 60x40 under the minimum 100x100"
    assert keep[2] == "image strip.png: aspect ratio 10.00 outside [0.25, 4]"
    assert keep[3].startswith("image blank.png: near blank")
    assert keep[4] == "image gone.png: unreadable"


def test_dedup_image_method_drops_near_duplicate_files_not_samples_on_one_file(tmp_path):
    pytest.importorskip("imagehash", reason="needs the images extra")
    from vlitc.ops.filters.dedup import DedupFilter

    root = tmp_path / "img"
    root.mkdir()
    _pattern(0).save(root / "a.png")
    _pattern(0).resize((320, 240)).save(root / "a_big.jpg", quality=80)
    _pattern(5).save(root / "b.png")
    ctx, _ = caching_ctx(tmp_path, image_roots={"c": root})
    samples = [qa("Q1", "A.", sid="1", image={"root": "c", "path": "a.png"}),
               qa("Q2", "B.", sid="2", image={"root": "c", "path": "a.png"}),
               qa("Q3", "C.", sid="3", image={"root": "c", "path": "a_big.jpg"}),
               qa("Q4", "D.", sid="4", image={"root": "c", "path": "b.png"}),
               qa("Q5", "E.", sid="5")]
    stats, keep = run(DedupFilter({"method": "image"}), samples, ctx)
    assert keep[:2] == [None, None] and keep[3:] == [None, None]
    assert keep[2].startswith("near-duplicate image a_big.jpg of c/a.png (sample 1; ")


def test_the_filters_are_registered_under_their_recipe_names():
    from vlitc.ops.registry import get

    assert get("filter", "decontaminate") is DecontaminateFilter
    assert get("filter", "image_check") is ImageCheckFilter
