"""vlitc.lock: canonical bytes, located read errors, exact differences."""

from __future__ import annotations

import pytest

from vlitc.errors import InputError
from vlitc.release import lock as lk


def _lock(**over):
    recipe = {"name": "r", "version": "1", "seed": 3, "generators": {"g": {"provider": "mock",
                                                                         "model": "m1"}}}
    steps = [{"id": "source:coco", "key": "s1", "files": {"b.json": "22", "a.json": "11"}},
             {"id": "task:t", "key": "t1"}]
    out = lk.make_lock(recipe, steps, {"count": 2, "sha256": "ab"}, {"python": "3.11", "x": "1"})
    out.update(over)
    return out


def test_lock_is_canonical_json_with_sorted_keys():
    data = lk.dumps(_lock())
    assert data.endswith(b"}\n") and data == lk.dumps(_lock())
    assert data.index(b'"images"') < data.index(b'"lock"') < data.index(b'"steps"')


def test_lock_collects_source_files_models_and_step_keys():
    lock = _lock()
    assert lock["sources"] == {"coco": {"a.json": "11", "b.json": "22"}}
    assert lock["models"] == {"generators.g": {"model": "m1", "provider": "mock"}}
    assert lock["steps"] == {"source:coco": "s1", "task:t": "t1"}


def test_image_set_hash_ignores_order_and_duplicates_but_not_content():
    a = lk.image_set_hash([("coco/1.jpg", "aa"), ("coco/2.jpg", "bb")])
    assert a == lk.image_set_hash([("coco/2.jpg", "bb"), ("coco/1.jpg", "aa"), ("coco/1.jpg", "aa")])
    assert a != lk.image_set_hash([("coco/1.jpg", "aa"), ("coco/2.jpg", "cc")])


def test_read_round_trips_from_a_release_folder(tmp_path):
    (tmp_path / lk.LOCK_NAME).write_bytes(lk.dumps(_lock()))
    assert lk.read(tmp_path) == _lock()


def test_read_of_malformed_lock_is_a_located_error(tmp_path):
    p = tmp_path / lk.LOCK_NAME
    p.write_text('{"lock": 1,\n  "seed": }')
    with pytest.raises(InputError, match=r"vlitc.lock:2:\d+: not valid JSON"):
        lk.read(p)
    p.write_text('{"lock": 99}')
    with pytest.raises(InputError, match="not a vlitc lock of format 1"):
        lk.read(p)
    with pytest.raises(InputError, match="cannot read lock"):
        lk.read(tmp_path / "nope")


def test_differences_name_every_changed_leaf_exactly():
    new = _lock(seed=4)
    new["steps"] = {"source:coco": "s2", "task:t": "t1", "task:u": "u1"}
    new["packages"] = {"python": "3.11", "x": "2"}
    assert lk.differences(_lock(), new) == [
        "packages.x: \"1\" -> \"2\"",
        "seed: 3 -> 4",
        "steps.source:coco: \"s1\" -> \"s2\"",
        "steps.task:u: not in the lock (\"u1\")",
    ]
    assert lk.verify(_lock(), new, ignore=("packages", "steps")) == ["seed: 3 -> 4"]
    assert lk.verify(_lock(), _lock()) == []
