"""The release report op writes a card, a report, indicators and a lock from literal inputs."""

from __future__ import annotations

import json
import re

import pytest

from tests._release_util import context, conv, demo_samples, img
from vlitc.ops.registry import get
from vlitc.ops.release import FILES, ReleaseReport

RECIPE = {
    "name": "demo", "version": "1.2.0", "seed": 7, "description": "A tiny release.",
    "sources": {"coco": {"type": "coco", "license": "CC-BY-4.0", "description": "COCO val"},
                "alpaca": {"type": "text", "description": "instructions"}},
    "generators": {"gpt": {"provider": "openai", "model": "gpt-4o-mini"}},
    "tasks": {"caption": {"kind": "template", "source": "coco"},
              "conv": {"kind": "conversation", "source": "coco", "generator": "gpt"}},
    "filters": [{"type": "clip_match", "name": "match", "model": "ViT-B-32"}, {"type": "min_words"}],
    "outputs": [{"format": "llava", "path": "train.json"},
                {"format": "parquet", "path": "train.parquet", "shard_size": 1000}],
}
STEPS = [
    {"id": "source:coco", "kind": "source", "key": "k-src", "n_in": 0, "n_out": 3,
     "files": {"ann/captions.json": "aa11"}},
    {"id": "task:caption", "kind": "task", "key": "k-cap", "n_in": 3, "n_out": 4},
    {"id": "merge", "kind": "merge", "key": "k-merge", "n_in": 6, "n_out": 6},
    {"id": "filter:match", "kind": "filter", "key": "k-f1", "n_in": 6, "n_out": 5},
    {"id": "filter:min_words", "kind": "filter", "key": "k-f2", "n_in": 5, "n_out": 4},
]


def _inputs(tmp_path):
    kept = demo_samples(tmp_path)
    objs = [{"category": "square", "bbox": [4, 4, 30, 30], "iscrowd": False}]
    kept[0]["meta"].update(annotations={"width": 64, "height": 48, "objects": objs},
                           stats={"match": {"score": 0.31}})
    dropped = [conv("caption/d/0", "caption", "Describe.", "A cat.", img("a.png"),
                    stats={"match": {"score": 0.12}},
                    drop={"filter": "match", "reason": "score 0.12 < 0.2"}),
               conv("text/9", "text", "Hi?", "x", None, source="alpaca",
                    drop={"filter": "min_words", "reason": "1 words < 2"})]
    return {"balance": kept, "filtered": kept, "dropped": dropped, "steps": STEPS}


def _write(tmp_path, params=None):
    data = _inputs(tmp_path)
    ctx = context(tmp_path, recipe=RECIPE, _inputs=lambda ref: iter(data[ref]))
    written = ReleaseReport(params or {"indicators": {"response": False}}).write(ctx)
    return ctx, written


def test_release_is_the_registered_report_and_writes_four_files(tmp_path):
    assert get("report", "release") is ReleaseReport
    ctx, written = _write(tmp_path)
    assert written == list(FILES)
    assert sorted(p.name for p in ctx.out_dir.iterdir()) == sorted(FILES)


@pytest.mark.exercises("report.release")
def test_card_names_sources_licences_counts_models_funnel_and_rebuild(tmp_path):
    ctx, _ = _write(tmp_path)
    card = (ctx.out_dir / "README.md").read_text()
    assert card.startswith("---\n") and "pretty_name: demo" in card
    assert "# demo 1.2.0" in card
    assert "| coco | coco | CC-BY-4.0 | COCO val |" in card
    assert "| alpaca | text | unknown | instructions |" in card
    assert "| caption | 2 |" in card and "| conv | 1 |" in card and "| text/alpaca | 1 |" in card
    assert "| gpt | openai | gpt-4o-mini | conv |" in card
    assert "| filter:match | 6 | 5 | 1 |" in card
    assert "| match | score 0.12 < 0.2 | 1 |" in card
    assert "| mean matching degree | 0.310 |" in card
    assert "vlitc build <recipe.yaml> --frozen" in card
    assert "train-*.parquet" in card


def test_indicators_json_holds_counts_and_indicators(tmp_path):
    ctx, _ = _write(tmp_path)
    ind = json.loads((ctx.out_dir / "indicators.json").read_text())
    assert ind["counts"]["task"] == {"caption": 2, "conv": 1, "text": 1}
    assert ind["counts"]["split"] == {"train": 3, "validation": 1}
    assert ind["indicators"]["task_diversity"] == 3
    assert ind["indicators"]["quality"]["matching_degree"] == 0.31
    assert ind["indicators"]["response_diversity"] is None


def test_lock_records_recipe_sources_images_models_packages_and_step_keys(tmp_path):
    ctx, _ = _write(tmp_path)
    lock = json.loads((ctx.out_dir / "vlitc.lock").read_text())
    assert lock["recipe"] == RECIPE and lock["seed"] == 7 and lock["lock"] == 1
    assert lock["sources"] == {"coco": {"ann/captions.json": "aa11"}}
    assert lock["images"]["count"] == 3 and len(lock["images"]["sha256"]) == 64
    assert lock["models"] == {"generators.gpt": {"model": "gpt-4o-mini", "provider": "openai"},
                              "tasks.conv": {"generator": "gpt"},
                              "filters[0]": {"model": "ViT-B-32"}}
    assert lock["packages"]["pillow"] and lock["packages"]["python"]
    assert lock["steps"]["filter:match"] == "k-f1"


def test_report_inlines_plots_images_boxes_and_drop_reasons(tmp_path):
    ctx, _ = _write(tmp_path, {"gallery": 10, "indicators": {"response": False}})
    page = (ctx.out_dir / "report.html").read_text()
    assert page.count('class="plot"') >= 4  # task mix, funnel, two length histograms (+ scores)
    assert "score: match.score" in page
    assert page.count("data:image/jpeg;base64,") == 4  # 3 kept with images + 1 dropped
    assert re.search(r'<rect x="4.0" y="4.0" width="26.0" height="26.0"', page)
    assert "dropped by match: score 0.12 &lt; 0.2" in page
    assert "src=\"http" not in page and "<link" not in page  # self-contained


def test_outputs_are_byte_identical_across_runs_and_hold_no_clock_time(tmp_path):
    ctx, _ = _write(tmp_path)
    first = {n: (ctx.out_dir / n).read_bytes() for n in FILES}
    for n in FILES:
        (ctx.out_dir / n).unlink()
    _write(tmp_path)
    assert {n: (ctx.out_dir / n).read_bytes() for n in FILES} == first
    years = re.compile(rb"20[2-9]\d-\d\d-\d\dT|\d\d:\d\d:\d\d")
    assert not any(years.search(b) for b in first.values())


def test_missing_image_in_gallery_shows_the_sample_without_a_picture(tmp_path):
    data = _inputs(tmp_path)
    data["balance"][0]["image"] = img("gone.png")
    ctx = context(tmp_path, recipe=RECIPE, _inputs=lambda ref: iter(data[ref]))
    ReleaseReport({"indicators": {"response": False}}).write(ctx)
    page = (ctx.out_dir / "report.html").read_text()
    assert "caption/a/0" in page and page.count("data:image/jpeg;base64,") == 3


def test_a_join_source_carries_the_licences_of_its_inputs():
    from vlitc.release.summary import sources

    rows = {r["name"]: r["license"] for r in sources({"sources": {
        "coco": {"type": "coco", "license": "CC-BY-4.0"},
        "text": {"type": "sharegpt", "license": "Apache-2.0"},
        "scenes": {"type": "join", "sources": ["coco", "text"]},
        "other": {"type": "generic"}}})}
    assert rows == {"coco": "CC-BY-4.0", "text": "Apache-2.0",
                    "scenes": "Apache-2.0 + CC-BY-4.0", "other": "unknown"}


def test_gallery_reservoir_keeps_n_per_group_whatever_the_order_and_histograms_take_tallies():
    import random
    from collections import Counter

    from vlitc.release import gallery
    from vlitc.release.svg import histogram

    samples = [{"id": f"s{i:03d}", "task": "ab"[i % 2]} for i in range(200)]
    picked = gallery.pick(samples, 6, 7, "kept")
    shuffled = list(samples)
    random.Random(1).shuffle(shuffled)
    assert gallery.pick(shuffled, 6, 7, "kept") == picked
    assert [s["task"] for s in picked] == ["a", "b"] * 3  # in turn from each group
    assert gallery.pick(samples, 6, 8, "kept") != picked  # another seed, another pick
    res = gallery.Reservoir(3, 7, "kept")
    for s in samples:
        res.add(s["task"], s["id"], s["id"])
    assert {g: len(v) for g, v in res.groups().items()} == {"a": 3, "b": 3}
    values = [1.0, 2.0, 2.0, 5.5, 9.0, 9.0, 9.0]
    assert histogram("h", values) == histogram("h", Counter(values))
