"""One status function for `vlitc plan` and `vlitc build`: the same keys, the same verdicts."""

from __future__ import annotations

import orjson
from _core_util import demo_copy, ran

from vlitc.api import build, plan_status
from vlitc.run.runners import RUNNERS


def test_every_step_kind_has_a_runner(tmp_path):
    recipe, plan, _rows = plan_status(demo_copy(tmp_path), tmp_path / "cache")
    assert {s.kind for s in plan.steps.values()} <= set(RUNNERS)


def test_plan_after_a_build_gives_the_build_keys_and_all_cached(tmp_path):
    demo = demo_copy(tmp_path)
    result = build(demo, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    _recipe, _plan, rows = plan_status(demo, tmp_path / "cache")
    assert {r["id"]: r["key"] for r in rows} == {s["id"]: s["key"] for s in result.manifest["steps"]}
    assert {r["status"] for r in rows} == {"cached"}


def test_plan_before_a_build_gives_the_keys_build_will_use_for_steps_without_inputs(tmp_path):
    demo = demo_copy(tmp_path)
    _recipe, _plan, rows = plan_status(demo, tmp_path / "cache")
    planned = {r["id"]: r["key"] for r in rows if r["key"] is not None}
    assert planned and all(sid.startswith(("source:", "pool:")) for sid in planned)
    result = build(demo, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    built = {s["id"]: s["key"] for s in result.manifest["steps"]}
    assert all(built[sid] == key for sid, key in planned.items())


def test_a_step_with_failed_items_is_stale_in_plan_and_reruns_in_build(tmp_path):
    demo = demo_copy(tmp_path)
    first = build(demo, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    key = next(s["key"] for s in first.manifest["steps"] if s["id"] == "task:brief_caption")
    path = tmp_path / "cache" / "steps" / f"{key}.json"
    path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), "incomplete": 2}))
    _recipe, _plan, rows = plan_status(demo, tmp_path / "cache")
    row = next(r for r in rows if r["id"] == "task:brief_caption")
    assert row["status"] == "stale" and row["reasons"] == ["incomplete: 2 failed item(s) to retry"]
    assert "task:brief_caption" in ran(build(demo, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"))
