"""The ``conversations`` task: existing instruction data passed through from every source that
carries it, joined with annotations by image id, and vlitc's own exports read back byte for byte."""

from __future__ import annotations

import json

import pytest
import yaml

from tests._core_util import DEMO_DATA, demo_copy
from tests._sources_util import gpt4_answers_joined, load, make_ctx
from vlitc.api import build
from vlitc.errors import UserError
from vlitc.ops.tasks.text_only import Conversations


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory):
    """The demo recipe built once, exporting every sample (train split) in all three formats."""
    tmp = tmp_path_factory.mktemp("demo")
    recipe = demo_copy(tmp)
    data = yaml.safe_load(recipe.read_text())
    data["outputs"] = [{"format": "llava", "path": "train.json", "split": "train"},
                       {"format": "sharegpt", "path": "train.jsonl", "split": "train"},
                       {"format": "parquet", "path": "train.parquet", "split": "train"},
                       {"format": "parquet", "path": "embedded.parquet", "split": "train",
                        "images": "embed"}]
    recipe.write_text(yaml.safe_dump(data))
    out = tmp / "release"
    build(recipe, out_dir=out, cache_dir=tmp / "cache")
    return out


def _reingest(tmp_path, release, source: dict, fmt: str, path: str, task: dict | None = None,
              **output):
    recipe = {"vlitc": 1, "name": "back", "version": "0.1.0", "seed": 1,
              "sources": {"coco": {**source, "images": str(DEMO_DATA / "images")}},
              "tasks": {"back": {"kind": "conversations", "source": "coco", **(task or {})}},
              "outputs": [{"format": fmt, "path": path, **output}], "report": False}
    (tmp_path / "back.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / f"back-{fmt}"
    result = build(tmp_path / "back.yaml", out_dir=out, cache_dir=tmp_path / "cache")
    return out / path, result


@pytest.mark.parametrize("fmt,path,kind", [("llava", "train.json", "llava"),
                                           ("sharegpt", "train.jsonl", "sharegpt"),
                                           ("parquet", "train.parquet", "llava")])
def test_vlitc_exports_read_back_through_the_task_re_export_byte_identical(demo_release, tmp_path,
                                                                          fmt, path, kind):
    original = demo_release / path
    again, result = _reingest(tmp_path, demo_release, {"type": kind, "file": str(original)}, fmt,
                              path, {"keep_labels": True} if fmt == "parquet" else None)
    assert again.read_bytes() == original.read_bytes()
    assert result.manifest["steps"][-1]["n_out"] > 100
    assert "warnings" not in result.manifest


def test_a_parquet_release_with_embedded_images_reads_back_byte_identical(demo_release, tmp_path):
    """The images of ``images: embed`` are ``datasets.Image`` values, read back by their path."""
    original = demo_release / "embedded.parquet"
    again, result = _reingest(tmp_path, demo_release, {"type": "llava", "file": str(original)},
                              "parquet", "embedded.parquet", {"keep_labels": True}, images="embed")
    assert again.read_bytes() == original.read_bytes()
    assert result.manifest["steps"][-1]["n_out"] > 100


def test_same_conversations_and_images_through_a_different_format(demo_release, tmp_path):
    from vlitc.release.read import read_file

    again, _ = _reingest(tmp_path, demo_release, {"type": "sharegpt",
                                                  "file": str(demo_release / "train.jsonl")},
                         "llava", "train.json")
    a, b = read_file(demo_release / "train.json"), read_file(again)
    assert [(s["id"], s["image"], s["turns"]) for s in a] == \
        [(s["id"], s["image"], s["turns"]) for s in b]


def test_text_only_on_an_image_release_warns_with_the_counter_and_strict_fails(demo_release,
                                                                              tmp_path):
    recipe = {"vlitc": 1, "name": "chat", "version": "0.1.0", "seed": 1,
              "sources": {"chat": {"type": "llava", "file": str(demo_release / "train.json"),
                                   "images": str(DEMO_DATA / "images")}},
              "tasks": {"chat": {"kind": "text_only", "source": "chat"}},
              "outputs": [{"format": "llava", "path": "out.json"}], "report": False}
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(recipe))
    result = build(tmp_path / "chat.yaml", out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    n = json.loads((demo_release / "train.json").read_text())
    warnings = result.manifest["warnings"]
    assert f"task:chat yields no samples from {len(n)} input records " \
           f"(skipped_has_image: {len(n)})" in warnings
    assert any(w.startswith("the release has no samples") for w in warnings)
    assert any(e.get("event") == "warning" and "skipped_has_image" in e["message"]
               for e in result.events)
    with pytest.raises(UserError, match="strict build: task:chat yields no samples"):
        build(tmp_path / "chat.yaml", out_dir=tmp_path / "o2", cache_dir=tmp_path / "c", strict=True)
    assert not (tmp_path / "o2").exists()


def test_gpt4_answers_join_annotations_by_coco_id_and_keep_provenance(fixtures_dir):
    join = gpt4_answers_joined(fixtures_dir)
    assert len(join) == 30 and all(len(r["conversations"]) == 3 for r in join)
    ctx = make_ctx(fixtures_dir)
    samples = list(Conversations({"source": "coco"}, "gpt4").run(join, ctx))
    assert len(samples) == 90 and ctx.counters["samples"] == 90
    s = samples[0]
    assert s["id"] == "525439/0" and s["image"] is None and s["task"] == "gpt4"
    assert s["turns"][0]["content"] == "What is the position of the skateboard in the image?"
    ann = s["meta"]["annotations"]
    assert ann["width"] == 640 and {o["category"] for o in ann["objects"]} >= {"skateboard"}
    assert len(ann["captions"]) == 5
    assert s["meta"]["provenance"] == {"source": "qa+boxes", "file": "coco2014_val_gpt4_qa_30x3.jsonl",
                                       "line": 1, "fields": {"id": "000000525439", "type": "conv"}}


@pytest.mark.exercises("task.conversations")
def test_multiinstruct_prompt_target_rows_pass_through(fixtures_dir):
    recs = load("generic", {"file": "MultiInstruct/train.jsonl",
                            "columns": {"id": "unique_id", "image": "image_path",
                                        "prompt": "prompt", "response": "target"}},
                make_ctx(fixtures_dir), "mi")
    ctx = make_ctx(fixtures_dir)
    samples = list(Conversations({"source": "mi", "ids": "task"}, "mi").run(recs, ctx))
    assert len(samples) == 59  # one per row, rows sharing an id are separate conversations
    first = samples[0]
    assert first["id"] == "mi/VQA_object_presence_10026521"
    assert first["turns"][1]["content"] == "no"
    assert first["meta"]["provenance"]["fields"]["task_name"] == "VQA_object_presence"
    assert first["meta"]["provenance"]["line"] == 1


def test_vlitc_build_strict_exits_2_naming_the_counter(demo_release, tmp_path, capsys):
    from vlitc.cli.main import main

    recipe = {"vlitc": 1, "name": "chat", "version": "0.1.0", "seed": 1,
              "sources": {"chat": {"type": "llava", "file": str(demo_release / "train.json"),
                                   "images": str(DEMO_DATA / "images")}},
              "tasks": {"chat": {"kind": "text_only", "source": "chat"}},
              "outputs": [{"format": "llava", "path": "out.json"}], "report": False}
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(recipe))
    args = ["build", str(tmp_path / "chat.yaml"), "--out", str(tmp_path / "o"), "--quiet",
            "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    assert main([*args, "--strict"]) == 2
    assert "skipped_has_image" in capsys.readouterr().err


def test_clean_existing_recipe_builds_offline_on_the_real_fixtures(repo_root, fixtures_dir, tmp_path):
    recipe = repo_root / "recipes" / "clean-existing.yaml"
    if not (recipe.parent / "../../shared/fixtures").resolve().samefile(fixtures_dir):
        pytest.skip("the recipe reads the fixtures next to the checkout")
    result = build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", strict=True)
    out = tmp_path / "out"
    kept = json.loads((out / "clean.json").read_text())
    drops = [json.loads(x) for x in (out / "drops.jsonl").read_text().splitlines()]
    why = {d["id"]: (d["filter"], d["reason"]) for d in drops}
    assert why["shipped/extra-2"][0] == "leakage" and why["shipped/extra-3"][0] == "truncated"
    assert why["shipped/extra-5"][0] == "dedup" and why["shipped/extra-7"][0] == "structure"
    assert why["shipped/extra-6"] == ("decontaminate", "in evaluation set pope: image id '310196'; "
                                   "pope: question 'Is there a snowboard in the image?' (100% of its 8-grams)")
    pope_hits = [d for d in drops if d["filter"] == "decontaminate"]
    assert len(pope_hits) == 4  # extra-6, and the 3 answers on the one LLaVA-Bench image in POPE
    assert len(kept) + len(drops) == 97 and len(kept) >= 86
    assert all(d["provenance"]["file"] for d in drops)
    card = (out / "README.md").read_text()
    assert "## Decontamination" in card and "| pope | 4 | image id: 4, question: 1 |" in card
    assert "drops.jsonl" in card and "| gpt4_answers | 86 | 4 | 95.6% |" in card
    assert result.manifest.get("warnings") is None


def test_llava_mix_recipe_mixes_existing_text_vqa_and_grounding_in_its_proportions(repo_root,
                                                                                   tmp_path):
    result = build(repo_root / "recipes" / "llava-mix.yaml", out_dir=tmp_path / "out",
                   cache_dir=tmp_path / "cache", strict=True)
    counts = json.loads((tmp_path / "out" / "indicators.json").read_text())["counts"]["task"]
    assert counts == {"grounding": 15, "llava_instruct": 14, "sharegpt_text": 4, "vqa_short": 27}
    data = json.loads((tmp_path / "out" / "llava_mix.json").read_text())
    text_only = [r for r in data if "image" not in r]
    assert len(text_only) == 4 and all("<image>" not in t["value"] for r in text_only
                                       for t in r["conversations"])
    vqa = [r for r in data if r["id"].startswith("vqa_short/")]
    assert all(r["conversations"][0]["value"].endswith(
        "Answer the question using a single word or phrase.") for r in vqa)
    assert "warnings" not in result.manifest


@pytest.mark.slow
def test_review_qc_recipe_builds_offline_with_clip_and_a_majority_of_three_judge(repo_root,
                                                                                 tmp_path,
                                                                                 monkeypatch):
    pytest.importorskip("open_clip", reason="needs the clip extra")
    import open_clip
    import torch
    from test_filters_clip import TINY

    from vlitc.llm.fakeserver import FakeServer

    cfg = tmp_path / "vlitc-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("vlitc-tiny-clip", pretrained=None).state_dict(),
               tmp_path / "tiny.pt")
    server = FakeServer().start_in_thread()
    monkeypatch.setenv("JUDGE_API_KEY", "sk-test")
    data = yaml.safe_load((repo_root / "recipes" / "review-qc.yaml").read_text())
    src = data["sources"]["conversations"]
    src.update(file=str(repo_root / "recipes" / src["file"]),
               images=str(repo_root / "recipes" / src["images"]))
    data["generators"]["judge"].update(base_url=server.base_url, retry_backoff=0.01)
    data["filters"][1].update(model=str(cfg), pretrained=str(tmp_path / "tiny.pt"), device="cpu")
    (tmp_path / "qc.yaml").write_text(yaml.safe_dump(data))
    result = build(tmp_path / "qc.yaml", out_dir=tmp_path / "out", cache_dir=tmp_path / "c")
    steps = {s["id"]: s for s in result.manifest["steps"]}
    assert steps["filter:clip_match"]["n_dropped"] == 2  # the bottom 10% of 24
    assert steps["measure:judge"]["counters"]["measured"] == 22
    assert 0 < len(server.log) <= 22  # one request per distinct conversation, 3 votes each
    assert data["filters"][2]["votes"] == 3
    kept = json.loads((tmp_path / "out" / "review_qc.json").read_text())
    assert len(kept) == 22


@pytest.mark.slow
def test_instruction_pool_expansion_recipe_builds_offline_and_ships_its_pool(repo_root, tmp_path):
    result = build(repo_root / "recipes" / "instruction-pool-expansion.yaml",
                   out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", strict=True)
    pool = json.loads((tmp_path / "out" / "pools" / "brief.json").read_text())
    assert pool[:2] == ["Describe the image briefly.", "Give a short caption for this picture."]
    assert 6 <= len(pool) <= 12 and len(set(map(str.lower, pool))) == len(pool)
    data = json.loads((tmp_path / "out" / "brief_captions.json").read_text())
    used = {r["conversations"][0]["value"].removeprefix("<image>\n") for r in data}
    assert used <= set(pool) and len(used) > 2
    assert "warnings" not in result.manifest
    # the expansion's requests and tokens are in the report's LLM section
    expanded = next(s for s in result.manifest["steps"] if s["id"] == "pool:brief")["counters"]
    assert expanded["llm_requests"] > 0 and expanded["completion_tokens"] > 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert (f"<td>pool brief</td><td>para</td><td>mock / mock-paraphraser</td><td></td>"
            f"<td>1.0</td><td>1</td><td>{expanded['llm_requests']}</td>") in page
