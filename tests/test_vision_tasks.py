"""Ops that show images to a model: generate / rewrite / judge with ``image: true``, the region
focus drawn on a derived image, the three vision recipes built offline against the loopback
server (which answers from the pixels it receives), and plan estimates of a vision recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from vlitc import api
from vlitc.errors import RecipeError
from vlitc.llm import session
from vlitc.llm.fakeserver import FakeServer, decode_images
from vlitc.llm.vision import DERIVED_ROOT
from vlitc.ops.base import OpContext
from vlitc.ops.registry import get
from vlitc.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "data" / "demo"
COLOURS = ("red", "green", "blue", "yellow")


def _caption_colours() -> dict[str, set[str]]:
    """Image file name -> the colours its ground-truth captions name."""
    caps = json.loads((DEMO / "annotations" / "captions_demo.json").read_text())
    names = {im["id"]: im["file_name"] for im in caps["images"]}
    out: dict[str, set[str]] = {}
    for a in caps["annotations"]:
        out.setdefault(names[a["image_id"]], set()).update(
            c for c in COLOURS if c in a["caption"].lower())
    return out


def _recipe(name: str, tmp: Path, server: FakeServer, sample: int = 6, edit=None) -> Path:
    """A copy of ``recipes/<name>.yaml`` with absolute paths, every generator on ``server``."""
    data = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    for src in data["sources"].values():
        for k in ("images", "captions", "instances"):
            if k in src:
                src[k] = str((ROOT / "recipes" / src[k]).resolve())
        src["sample"] = sample
    for pool in (data.get("pools") or {}).values():
        if "file" in pool:
            pool["file"] = str((ROOT / "recipes" / pool["file"]).resolve())
    for gen in data["generators"].values():
        gen.update(base_url=server.base_url, api_key_env="VLITC_TEST_KEY", retry_backoff=0.01)
    data["report"] = {"indicators": {"response": False}}  # no embedding model in these tests
    if edit:
        edit(data)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    return FakeServer().start_in_thread()


def _samples(release: Path, name: str) -> list[dict]:
    return json.loads((release / name).read_text())


def _no_image_bytes(release: Path) -> None:
    text = (release / "llm_responses.jsonl").read_text()
    assert "base64" not in text and "data:image" not in text
    assert all(len(line) < 4000 for line in text.splitlines())


def test_sharegpt4v_recipe_captions_from_the_pixels_then_expands_them(tmp_path, server):
    recipe = _recipe("sharegpt4v-style", tmp_path, server)
    out = api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    samples = _samples(tmp_path / "rel", "sharegpt4v_style.json")
    captions = [s for s in samples if s["id"].startswith("caption/")]
    convs = [s for s in samples if s["id"].startswith("conversation/")]
    assert len(captions) == len(convs) == 6
    truth = _caption_colours()
    for s in captions:  # the vision model's answer names a colour the image really has
        answer = s["conversations"][1]["value"]
        dominant = answer.split("the dominant colour is ")[1].split(" ")[0]
        assert dominant in truth[s["image"]], (s["image"], answer)
        assert (tmp_path / "rel" / "images" / s["image"]).is_file()
    images = [r for r in server.log if r.get("images")]
    assert len(images) == 6 and len(server.log) == 12  # 6 vision captions, 6 text expansions
    _no_image_bytes(tmp_path / "rel")
    sent = len(server.log)
    again = api.build(recipe, out_dir=tmp_path / "rel2", cache_dir=tmp_path / "cache",
                      force=("task",))
    assert len(server.log) == sent  # every request answered from the store
    assert again.manifest["llm"]["images_prepared"] == 0  # and no image prepared again
    assert out.manifest["llm"]["total"]["images"] == 6


def test_allava_recipe_caption_then_reasoning_question(tmp_path, server):
    recipe = _recipe("allava-style", tmp_path, server)
    api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    samples = _samples(tmp_path / "rel", "allava_style.json")
    assert len(samples) == 6
    for s in samples:
        turns = s["conversations"]
        assert len(turns) == 4 and "I see image 1 shows" in turns[1]["value"]
    got = [im for r in server.log for im in r["images"]]
    assert {im["detail"] for im in got} == {"low"} and all(max(im["width"], im["height"]) <= 768
                                                          for im in got)


def test_minigpt4_recipe_report_shows_drafts_refinements_and_drops(tmp_path, server):
    recipe = _recipe("minigpt4", tmp_path, server, sample=12)
    out = api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    steps = {s["id"]: s for s in out.manifest["steps"]}
    assert steps["task:draft"]["n_out"] == steps["task:refined"]["n_out"] == 12
    dropped = steps["filter:min_words"]["n_dropped"]
    assert 0 < dropped < 12
    kept = _samples(tmp_path / "rel", "minigpt4.json")
    assert len(kept) == 12 - dropped and all("(ref " not in s["conversations"][1]["value"]
                                             for s in kept)  # the refinement removed the asides
    report = (tmp_path / "rel" / "report.html").read_text()
    assert "draft (before the rewrite)" in report and "dropped by min_words" in report
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "| filter:min_words | 12 |" in card and "| vlm | openai | gpt-4o | draft |" in card


def _region_recipe(tmp: Path, server: FakeServer, mark: str, vision: bool) -> Path:
    def edit(d):
        d["generators"]["vlm"]["vision"] = vision
        d["tasks"] = {"region": {"kind": "generate", "source": "coco", "generator": "vlm",
                                 "image": vision, "prompt": "region/focus", "context": "region",
                                 "mark": mark, "parse": "llava_qa", "examples": 1}}
        d["filters"] = [{"type": "structure"}]
        d["generators"].pop("llm")
    return _recipe("minigpt4", tmp, server, sample=4, edit=edit)


def test_region_box_is_drawn_on_the_image_the_generator_and_the_release_see(tmp_path, server):
    recipe = _region_recipe(tmp_path, server, "draw", vision=True)
    api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    got = [r["images"][0] for r in server.log]
    assert len(got) == 4 and all(im["marked"] for im in got)  # the generator saw the box
    samples = _samples(tmp_path / "rel", "minigpt4.json")
    for s in samples:
        assert s["image"].startswith("derived/")
        with Image.open(tmp_path / "rel" / "images" / s["image"]) as im:
            assert im.size == (160, 120)
        assert "with a marked box" in s["conversations"][1]["value"]


def test_region_box_as_coordinates_for_a_text_generator(tmp_path, server):
    recipe = _region_recipe(tmp_path, server, "text", vision=False)
    api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    assert not any(r.get("images") for r in server.log)
    for s in _samples(tmp_path / "rel", "minigpt4.json"):
        first = s["conversations"][0]["value"]
        assert first.startswith("<image>\nConsider the region [") and "fractions" in first
        assert not s["image"].startswith("derived/")


def test_image_true_on_a_text_generator_is_a_located_error(tmp_path, server, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def edit(d):
        d["generators"]["vlm"].pop("vision")
    recipe = _recipe("minigpt4", tmp_path, server, edit=edit)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    [msg] = [p.format().splitlines()[0] for p in info.value.problems]
    assert msg.startswith(f"{recipe}:")
    assert "image: true sends images, but generator 'vlm' does not declare vision: true" in msg
    line = int(msg.split(":")[1])
    assert recipe.read_text().splitlines()[line - 1].strip() == "image: true"


def _ctx(s, gens, step="x"):
    return OpContext(seed=1, recipe_dir=ROOT, step_id=step, generators=gens,
                     image_roots={"coco": DEMO / "images", DERIVED_ROOT: ROOT / ".unused"},
                     _client=s.client)


def _shape_sample(sid: str, file: str, answer: str) -> dict:
    return {"id": sid, "task": "t", "source": "coco", "image": {"root": "coco", "path": file},
            "turns": [{"role": "user", "content": "<image>\nWhat colour dominates?"},
                      {"role": "assistant", "content": answer}], "meta": {}}


def test_judge_with_image_votes_from_the_pixels(tmp_path, server):
    gens = {"v": {"provider": "openai", "model": "m", "base_url": server.base_url, "vision": True}}
    truth = _caption_colours()
    file = "000000000003.png"
    with Image.open(DEMO / "images" / file) as im:
        [seen] = decode_images({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + __import__(
                "base64").b64encode((DEMO / "images" / file).read_bytes()).decode()}}]}]})
        assert im.size == (160, 120)
    wrong = next(c for c in COLOURS if c not in truth[file])
    judge = get("filter", "judge")(get("filter", "judge").with_defaults(
        {"generator": "v", "image": True, "votes": 1}), label="judge")
    samples = [_shape_sample("a", file, f"Mostly {seen['dominant']}."),
               _shape_sample("b", file, f"Mostly {wrong}.")]
    with session({"generators": gens}, tmp_path) as s:
        stats = judge.measure(samples, _ctx(s, gens))
    assert [st["votes"] for st in stats] == [["correct"], ["incorrect"]]
    assert all(r["images"][0]["width"] == 160 for r in server.log)


def test_rewrite_with_image_sends_the_sample_image_with_the_correction_pack(tmp_path, server):
    gens = {"v": {"provider": "openai", "model": "m", "base_url": server.base_url, "vision": True}}
    op = get("task", "rewrite")(get("task", "rewrite").with_defaults(
        {"task": ["t"], "generator": "v", "image": True, "prompt": "vigc/correct",
         "examples": 1}), label="fix")
    sample = _shape_sample("a", "000000000001.png", "Mostly purple (I think).")
    with session({"generators": gens}, tmp_path) as s:
        ctx = _ctx(s, gens, "task:fix")
        [out] = list(op.run([sample], ctx))
    assert out["turns"][1]["content"] == "Mostly purple."
    assert out["meta"]["rewrite"]["original"][1]["content"] == "Mostly purple (I think)."
    [row] = server.log
    assert row["images"][0]["width"] == 160 and row["images"][0]["dominant"] == "blue"


def test_plan_estimate_of_a_vision_recipe_is_within_ten_percent_of_the_spend(tmp_path, server):
    def edit(d, temperature=0.3):
        d["generators"]["vlm"]["max_tokens"] = 16
        d["tasks"]["caption_qa"]["temperature"] = temperature
    recipe = _recipe("allava-style", tmp_path, server, sample=12, edit=edit)
    api.build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "cache")
    recipe = _recipe("allava-style", tmp_path, server, sample=12,
                     edit=lambda d: edit(d, temperature=0.9))  # the task is stale, its source not
    loaded, plan, rows = api.plan_status(recipe, tmp_path / "cache")
    est = api.estimates(loaded, plan, rows)["task:caption_qa"]
    out = api.build(recipe, out_dir=tmp_path / "rel2", cache_dir=tmp_path / "cache")
    spent = out.manifest["llm"]["total"]
    assert est["calls"] == spent["calls"] == 12 and est["images"] == 12
    assert abs(est["usd"] - spent["usd"]) <= 0.1 * spent["usd"], (est, spent)
