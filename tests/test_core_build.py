"""End-to-end builds of the demo recipe: caching, reruns on exactly what changed, atomicity."""

from __future__ import annotations

import json

import pytest
from _core_util import cached, demo_copy, ran

from vlitc.api import build, plan_status
from vlitc.errors import UserError
from vlitc.plan import build_plan
from vlitc.recipe import load_recipe


@pytest.fixture
def demo(tmp_path):
    return demo_copy(tmp_path, copy_annotations=True)


def _build(recipe, tmp_path, **kw):
    return build(recipe, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", **kw)


def _downstream(recipe, step):
    return {step} | build_plan(load_recipe(recipe)).downstream(step)


def test_second_build_runs_nothing_and_exports_are_byte_identical(demo, tmp_path):
    first = _build(demo, tmp_path)
    files = {o["path"]: (tmp_path / "out" / o["path"]).read_bytes() for o in first.manifest["outputs"]}
    assert files and ran(first) == set(build_plan(load_recipe(demo)).order)
    second = _build(demo, tmp_path)
    assert ran(second) == set()
    assert all(s["status"] == "cached" for s in second.manifest["steps"])
    for path, data in files.items():
        assert (tmp_path / "out" / path).read_bytes() == data
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["name"] == "demo" and manifest["outputs"][0]["records"] > 0


def test_fresh_caches_build_identical_bytes(demo, tmp_path):
    a = build(demo, out_dir=tmp_path / "a", cache_dir=tmp_path / "ca")
    b = build(demo, out_dir=tmp_path / "b", cache_dir=tmp_path / "cb")
    assert [o["sha256"] for o in a.manifest["outputs"]] == [o["sha256"] for o in b.manifest["outputs"]]
    assert [s["key"] for s in a.manifest["steps"]] == [s["key"] for s in b.manifest["steps"]]


def test_editing_one_task_template_reruns_that_task_and_its_dependents(demo, tmp_path):
    _build(demo, tmp_path)
    text = demo.read_text()
    demo.write_text(text.replace("Answer with its bounding box.", "Give its bounding box."))
    result = _build(demo, tmp_path)
    assert ran(result) == _downstream(demo, "task:object_box")
    assert "task:brief_caption" in cached(result) and "source:coco" in cached(result)


def test_editing_a_pool_reruns_the_pool_and_the_tasks_reading_it(demo, tmp_path):
    _build(demo, tmp_path)
    demo.write_text(demo.read_text().replace("Write a terse description", "Write a short description"))
    result = _build(demo, tmp_path)
    assert ran(result) == _downstream(demo, "pool:brief")
    assert "task:object_box" in cached(result)


def test_description_and_worker_changes_rerun_nothing(demo, tmp_path):
    _build(demo, tmp_path)
    text = demo.read_text().replace("description: synthetic shapes, captions and boxes",
                                    "description: something else entirely")
    text = text.replace("{type: min_words, min: 1}", "{type: min_words, min: 1, description: any}")
    text = text.replace("{type: dedup, method: exact, scope: image}",
                        "{type: dedup, method: exact, scope: image, batch_size: 7}")
    demo.write_text(text.replace("Template tasks over", "Templates over"))
    assert ran(_build(demo, tmp_path)) == set()


def test_changing_an_annotation_file_reruns_its_source_and_dependents(demo, tmp_path):
    _build(demo, tmp_path)
    caps = tmp_path / "annotations" / "captions_demo.json"
    data = json.loads(caps.read_text())
    data["annotations"][0]["caption"] = "A changed caption about a green triangle."
    caps.write_text(json.dumps(data))
    result = _build(demo, tmp_path)
    assert ran(result) == _downstream(demo, "source:coco") - {"task:object_box"} or \
        ran(result) == _downstream(demo, "source:coco")
    assert "source:coco" in ran(result) and "pool:brief" in cached(result)


def test_threshold_change_reruns_only_the_keep_step_when_output_is_unchanged(demo, tmp_path):
    _build(demo, tmp_path)
    demo.write_text(demo.read_text().replace("{type: min_words, min: 1}", "{type: min_words, min: 0}"))
    result = _build(demo, tmp_path)
    # the same samples are kept, so balance and exports stay cached; the release report
    # records every step key in its lock file, so it is written again
    assert ran(result) == {"filter:min_words", "report"}
    assert "measure:min_words" in cached(result)


def test_plan_reports_reasons_before_building(demo, tmp_path):
    _build(demo, tmp_path)
    demo.write_text(demo.read_text().replace("{type: min_words, min: 1}", "{type: min_words, min: 3}"))
    _recipe, _plan, rows = plan_status(demo, tmp_path / "cache")
    by_id = {r["id"]: r for r in rows}
    assert by_id["measure:min_words"]["status"] == "cached"
    assert by_id["filter:min_words"]["status"] == "stale"
    assert by_id["filter:min_words"]["reasons"] == ["params_changed: min"]
    assert by_id["source:coco"]["status"] == "cached"


def test_force_reruns_the_named_step(demo, tmp_path):
    _build(demo, tmp_path)
    result = _build(demo, tmp_path, force=["source:coco"])
    assert "source:coco" in ran(result)
    assert "task:brief_caption" in cached(result)  # same output: nothing downstream reruns


def test_corrupt_cache_entry_is_a_warning_and_a_miss(demo, tmp_path):
    first = _build(demo, tmp_path)
    key = next(s["key"] for s in first.manifest["steps"] if s["id"] == "task:object_box")
    (tmp_path / "cache" / "steps" / f"{key}.json").write_text("{not json")
    result = _build(demo, tmp_path)
    assert "task:object_box" in ran(result)
    warnings = [e["message"] for e in result.events if e.get("event") == "warning"]
    assert any("corrupt" in w for w in warnings)


def test_failing_step_leaves_no_cache_entry_and_no_output(demo, tmp_path):
    caps = tmp_path / "annotations" / "captions_demo.json"
    caps.write_text(caps.read_text()[:5000])  # a truncated annotation file
    with pytest.raises(UserError) as info:
        _build(demo, tmp_path)
    assert str(info.value).startswith(f"{caps}:")  # located in the file, with line and column
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not (tmp_path / "out" / "train.json").exists()
    assert not list((tmp_path / "cache" / "tmp").iterdir())
    assert not list((tmp_path / "cache" / "steps").iterdir()) or all(
        "source:coco" not in p.read_text() for p in (tmp_path / "cache" / "steps").iterdir())


def test_manifest_lists_steps_and_outputs_with_hashes(demo, tmp_path):
    m = _build(demo, tmp_path).manifest
    assert {"id", "key", "status", "seconds", "n_in", "n_out"} <= set(m["steps"][0])
    out = m["outputs"][0]
    import hashlib

    assert hashlib.sha256((tmp_path / "out" / out["path"]).read_bytes()).hexdigest() == out["sha256"]
