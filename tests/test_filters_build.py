"""End to end: a built recipe whose filter thresholds change re-runs no model."""

from __future__ import annotations

import json

import pytest
import yaml
from test_filters_clip import TINY

from vlitc import api

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "data" / "demo"


def recipe(tmp_path, keep: dict, tie: str, max_rate: float):
    import open_clip
    import torch

    cfg = tmp_path / "vlitc-tiny-clip.json"
    if not cfg.exists():
        cfg.write_text(json.dumps(TINY))
        open_clip.add_model_config(cfg)
        torch.manual_seed(0)
        torch.save(open_clip.create_model("vlitc-tiny-clip", pretrained=None).state_dict(),
                   tmp_path / "tiny.pt")
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    src = data["sources"]["coco"]
    src.update(images=str(DEMO / "images"), captions=str(DEMO / "annotations/captions_demo.json"),
               instances=str(DEMO / "annotations/instances_demo.json"))
    data["sources"] = {"coco": src}
    data["tasks"] = {"brief_caption": data["tasks"]["brief_caption"]}
    data.pop("balance", None)
    data["generators"] = {"judge": {"provider": "mock", "model": "mock",
                                    "template": "Fine.\nVERDICT: {{ 'correct' if index else 'incorrect' }}"}}
    data["filters"] = [
        {"type": "clip_match", "model": "vlitc-tiny-clip.json", "pretrained": "tiny.pt",
         "device": "cpu", **keep},
        {"type": "judge", "generator": "judge", "votes": 3, "tie": tie},
        {"type": "hallucination", "max_rate": max_rate},
    ]
    path = tmp_path / "filters.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def statuses(result) -> dict[str, str]:
    return {e["step"]: e["status"] for e in result.events if e.get("event") == "step"}


@pytest.mark.slow
def test_changing_thresholds_reruns_no_clip_encode_and_no_judge_call(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = api.build(recipe(tmp_path, {"min_score": -1.0}, "drop", 0.0), out_dir=out, cache_dir=cache)
    st = statuses(first)
    assert {st["measure:clip_match"], st["measure:judge"], st["measure:hallucination"]} == {"ran"}
    counters = {s["id"]: s["counters"] for s in first.manifest["steps"]}
    assert counters["measure:clip_match"]["clip_images_encoded"] > 0
    assert counters["measure:judge"]["measured"] > 0
    # every threshold changes: a CLIP top fraction, the judge's tie rule, the CHAIR limit
    second = api.build(recipe(tmp_path, {"top_fraction": 0.5}, "keep", 0.5), out_dir=out,
                       cache_dir=cache)
    st = statuses(second)
    assert st["measure:clip_match"] == "cached"
    assert {st["filter:clip_match"], st["filter:judge"], st["filter:hallucination"]} == {"ran"}
    steps = {s["id"]: s for s in second.manifest["steps"]}
    assert 0 < steps["filter:clip_match"]["n_dropped"] < steps["filter:clip_match"]["n_in"]
    for m in ("measure:judge", "measure:hallucination"):  # a smaller input, every item cached
        assert st[m] == "cached" or "measured" not in steps[m]["counters"], steps[m]
