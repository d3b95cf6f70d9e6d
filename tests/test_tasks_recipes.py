"""The shipped LLaVA-1.5 and InstructBLIP-style recipes build offline on the demo data, and their
outputs meet what each response format requires (checked against the demo annotations)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from vlitc.formats import FORMATS, LETTERS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "data" / "demo" / "annotations"
SHORT = FORMATS["short"].prompt
MC = FORMATS["multiple_choice"].prompt


def build(name: str, tmp_path: Path) -> list[dict]:
    api = pytest.importorskip("vlitc.api")
    recipe = ROOT / "recipes" / f"{name}.yaml"
    if not (DEMO / "instances_demo.json").is_file():
        pytest.skip("demo data not generated")
    res = api.build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    out = res.out_dir / f"{name.replace('-', '_')}.json"
    return json.loads(out.read_text())


def demo_objects() -> dict[str, tuple[dict, list[dict]]]:
    """file name -> (image, objects with category names and [x1, y1, x2, y2] boxes)."""
    inst = json.loads((DEMO / "instances_demo.json").read_text())
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    out = {i["file_name"]: (i, []) for i in inst["images"]}
    by_id = {i["id"]: i["file_name"] for i in inst["images"]}
    for a in inst["annotations"]:
        x, y, w, h = a["bbox"]
        out[by_id[a["image_id"]]][1].append({"category": cats[a["category_id"]],
                                             "bbox": [x, y, x + w, y + h], "iscrowd": a["iscrowd"]})
    return out


def by_task(samples: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(s["id"].split("/")[0], []).append(s)
    return out


def check_boxes(samples, box_format, objects):
    bf = FORMATS[box_format]
    for s in samples:
        img, objs = objects[Path(s["image"]).name]
        [phrase] = re.findall(r"\bthe (circle|square|triangle)\b", s["conversations"][0]["value"])
        [obj] = [o for o in objs if o["category"] == phrase]
        back = bf.decode(s["conversations"][1]["value"], img["width"], img["height"])
        assert max(abs(a - b) for a, b in zip(back, obj["bbox"], strict=True)) <= bf.tolerance(
            img["width"], img["height"])


@pytest.mark.slow
def test_llava15_academic_recipe_outputs_meet_their_formats(tmp_path):
    samples = build("llava15-academic", tmp_path)
    tasks = by_task(samples)
    assert set(tasks) == {"vqa_mc", "rec", "reg", "caption", "conversation"}
    for s in tasks["conversation"]:
        convo = s["conversations"]
        assert sum(t["value"].count("<image>") for t in convo) == 1
        assert convo[0]["value"].startswith("<image>\n") and len(convo) <= 12
        for q, a in zip(convo[::2], convo[1::2], strict=True):
            assert q["value"].endswith(SHORT) and FORMATS["short"].problem(a["value"]) is None
    for s in tasks["vqa_mc"]:
        q, a = (t["value"] for t in s["conversations"])
        options = re.findall(r"^([A-Z])\. ", q, flags=re.M)
        assert q.endswith(MC) and a in options and LETTERS.index(a) < len(options)
    for s in tasks["caption"]:
        assert FORMATS["one_sentence"].problem(s["conversations"][1]["value"]) is None
    check_boxes(tasks["rec"], "bbox", demo_objects())
    assert all(re.fullmatch(r"\[\d\.\d\d, \d\.\d\d, \d\.\d\d, \d\.\d\d\]", s["conversations"][1]["value"])
               for s in tasks["rec"])


@pytest.mark.slow
def test_instructblip_recipe_outputs_are_checkable_and_deterministic(tmp_path):
    samples = build("instructblip-style", tmp_path / "a")
    again = build("instructblip-style", tmp_path / "b")
    assert samples == again
    tasks = by_task(samples)
    objects = demo_objects()
    for name in ("pope_random", "pope_adversarial"):
        labels = Counter()
        for s in tasks[name]:
            _, objs = objects[Path(s["image"]).name]
            q, a = (t["value"] for t in s["conversations"])
            named = [c for c in ("circle", "square", "triangle") if c in q]
            assert len(named) == 1
            assert (a == "Yes") == any(o["category"] == named[0] for o in objs)
            labels[a] += 1
        assert labels["No"] > 0 and labels["Yes"] > 0
    for s in tasks["counting"]:
        _, objs = objects[Path(s["image"]).name]
        q, a = (t["value"] for t in s["conversations"])
        [cat] = [c for c in ("circle", "square", "triangle") if c + "s" in q]
        assert int(a) == sum(1 for o in objs if o["category"] == cat and not o["iscrowd"])
    check_boxes(tasks["grounding"], "bbox_thousand", objects)
    templates = Counter(s["conversations"][0]["value"].split("\n")[1] for s in tasks["caption"])
    assert len(templates) == 13 and max(templates.values()) - min(templates.values()) <= 1
