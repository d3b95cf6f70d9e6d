"""A cache that cannot lie: every object is checked against its sha256 when it is read, a bad
one is removed and rebuilt by the step that produced it, and gc clears what interrupted builds
left without touching paid LLM responses."""

from __future__ import annotations

import json

import orjson
import pytest
from _core_util import demo_copy, ran

from vlitc.api import build
from vlitc.cli.main import main
from vlitc.release import layout
from vlitc.run.fingerprint import sha256_file
from vlitc.run.store import Store


def _entry(cache, result, step):
    key = next(s["key"] for s in result.manifest["steps"] if s["id"] == step)
    return orjson.loads((cache / "steps" / f"{key}.json").read_bytes())


def _object(cache, sha):
    return cache / "objects" / sha[:2] / sha


def _flip(path, at=40):
    """Change one byte, keeping the size (a same-size corruption)."""
    data = bytearray(path.read_bytes())
    at = min(at, len(data) - 1)
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    path.write_bytes(bytes(data))


def _warnings(result):
    return [e["message"] for e in result.events if e.get("event") == "warning"]


@pytest.fixture
def built(tmp_path):
    recipe = demo_copy(tmp_path)
    cache = tmp_path / "c"
    return recipe, cache, build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)


def _rebalance(recipe):
    """An edit that reruns balance (and what follows), which reads the filtered samples."""
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 150"))


def _shard(cache, result, step):
    """The first object of ``step``'s main output that the step wrote itself: a shard of a full
    output, the selection of a filter's view, the stats column of a measure's."""
    out = _entry(cache, result, step)["outputs"]["main"]
    if "view" in out:
        view = out["view"]
        sha = view["select"]["sha256"] if view["select"] else view["columns"][-1]["pieces"][0]["sha256"]
    else:
        sha = out["shards"][0]["sha256"]
    return _object(cache, sha + ".zst")


def test_a_truncated_object_is_replaced_when_its_step_runs_again(built, tmp_path):
    recipe, cache, first = built
    shard = _shard(cache, first, "task:object_box")
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    _rebalance(recipe)
    second = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert "task:object_box" in ran(second)
    assert any("corrupt" in w for w in _warnings(second))
    assert shard.read_bytes() == good  # replaced, not kept
    third = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert ran(third) == set() and not _warnings(third)
    fresh = build(recipe, out_dir=tmp_path / "fresh", cache_dir=tmp_path / "c2")
    assert layout.file_hashes(fresh.manifest) == layout.file_hashes(second.manifest)


def test_a_same_size_corruption_is_found_on_read_and_its_step_reruns(built, tmp_path):
    recipe, cache, first = built
    shard = _shard(cache, first, "filter:dedup")
    good = shard.read_bytes()
    _flip(shard)
    _rebalance(recipe)  # balance reads filter:dedup's output: the damaged shard
    second = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert "filter:dedup" in ran(second) and "balance" in ran(second)
    assert any("corrupt" in w and "filter:dedup" in w for w in _warnings(second))
    assert shard.read_bytes() == good
    assert not layout.verify(tmp_path / "rel")


def test_a_shard_that_no_longer_parses_is_rebuilt_never_an_internal_error(built, tmp_path, capsys):
    recipe, cache, first = built
    shard = _shard(cache, first, "merge")
    data = shard.read_bytes()
    shard.write_bytes(data[:20] + b"\x00" * 10 + data[30:])  # same size, not JSON any more
    _rebalance(recipe)
    code = main(["build", str(recipe), "--out", str(tmp_path / "rel"), "--cache-dir", str(cache),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "internal error" not in capsys.readouterr().err
    assert not layout.verify(tmp_path / "rel")


def test_a_corrupt_release_file_in_the_cache_never_reaches_a_release(built, tmp_path):
    recipe, cache, first = built
    step = next(o["step"] for o in first.manifest["outputs"] if o["path"] == "train.json")
    train = next(f for f in _entry(cache, first, step)["files"] if f["path"] == "train.json")
    _flip(_object(cache, train["sha256"]), at=100)
    result = build(recipe, out_dir=tmp_path / "new", cache_dir=cache)  # nothing else changed
    assert step in ran(result)
    assert any("corrupt" in w for w in _warnings(result))
    assert not layout.verify(tmp_path / "new")
    assert sha256_file(tmp_path / "new" / "train.json") == train["sha256"]


def test_gc_removes_leftover_temp_files_and_keeps_paid_responses(built, tmp_path, capsys):
    from vlitc.llm.cache import ResponseCache

    recipe, cache, _ = built
    responses = ResponseCache(cache / "llm")
    responses.set("k" * 64, {"text": "a paid answer", "model": "m"})
    responses.close()
    left = [cache / "tmp" / "shard-abc", cache / "steps" / ".tmp-x1", cache / ".tmp-y2",
            cache / "state" / "demo" / ".tmp-z3"]
    for p in left:
        p.write_bytes(b"half a write")
    (cache / "tmp" / "out-q").mkdir()
    (cache / "tmp" / "out-q" / "train.json").write_text("[")
    assert main(["cache", "gc", "--cache-dir", str(cache)]) == 0
    assert "5 temp files" in capsys.readouterr().out
    assert not any(p.exists() for p in left) and not list((cache / "tmp").iterdir())
    responses = ResponseCache(cache / "llm")
    assert responses.get("k" * 64)["text"] == "a paid answer"
    responses.close()
    assert ran(build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)) == set()


def test_gc_waits_for_no_build_it_would_race_with(built, capsys):
    _, cache, _ = built
    store = Store(cache)  # a build in progress holds the cache
    try:
        (cache / "tmp" / "shard-live").write_bytes(b"being written")
        assert main(["cache", "gc", "--cache-dir", str(cache)]) == 2
        assert "a build is using the cache" in capsys.readouterr().err
        assert (cache / "tmp" / "shard-live").exists()
    finally:
        store.close()


def test_the_manifest_and_the_release_agree_byte_for_byte(built, tmp_path):
    _, _, first = built
    m = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    assert m == layout.read_manifest(tmp_path / "rel") and m["outputs"] == first.manifest["outputs"]
    assert not layout.verify(tmp_path / "rel")


def test_a_corrupt_object_found_in_a_worker_process_reaches_the_build_intact():
    import pickle
    from pathlib import Path

    from vlitc.run.store import CorruptObject

    e = pickle.loads(pickle.dumps(CorruptObject("ab" * 32, Path("/c/objects/ab/x"))))
    assert isinstance(e, CorruptObject) and e.sha == "ab" * 32 and "corrupt" in str(e)


def test_a_corrupt_source_shard_read_by_a_task_on_the_process_pool_is_rebuilt(built, tmp_path):
    recipe, cache, first = built
    shard = _shard(cache, first, "source:coco")
    good = shard.read_bytes()
    _flip(shard, at=len(good) // 2)
    recipe.write_text(recipe.read_text().replace("Answer with its bounding box.", "Give its box."))
    second = build(recipe, out_dir=tmp_path / "rel", cache_dir=cache)
    assert {"source:coco", "task:object_box"} <= ran(second)
    assert shard.read_bytes() == good and not layout.verify(tmp_path / "rel")


def test_a_cache_that_keeps_corrupting_is_a_located_error_not_an_internal_one(built, tmp_path,
                                                                                 capsys, monkeypatch):
    """A disk that damages every shard it holds: the build repairs a bounded number of objects,
    then stops with exit 2, the cache folder named and what to do, and no release half-written."""
    recipe, cache, first = built
    real = Store.plain

    def failing(self, sha):
        data = real(self, sha)
        _flip(self.object_path(sha + ".zst"))  # damaged again as soon as it is read
        return data

    monkeypatch.setattr(Store, "plain", failing)
    _rebalance(recipe)
    before = layout.file_hashes(first.manifest)
    code = main(["build", str(recipe), "--out", str(tmp_path / "rel"), "--cache-dir", str(cache),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    assert "more keep appearing" in err and str(cache) in err and "--cache-dir" in err
    assert not layout.verify(tmp_path / "rel")  # the old release stands, whole
    assert layout.file_hashes(json.loads((tmp_path / "rel" / layout.MANIFEST).read_text())) == before


def test_a_file_a_step_wrote_moves_into_the_store_and_a_linked_one_is_copied(tmp_path):
    """A release file the step wrote (one name) is moved into the object store; one that is a
    hard link of a file elsewhere (an image placed with ``images: link``) is copied, so the
    store's object never changes with the original."""
    import os

    store = Store(tmp_path / "cache")
    written = store.tmp / "train.json"
    written.write_bytes(b"[\n]\n")
    sha, size = store.put_file(written, move=True)
    assert not written.exists() and size == 4
    assert store.object_path(sha).read_bytes() == b"[\n]\n" and sha == sha256_file(store.object_path(sha))
    original = tmp_path / "image.png"
    original.write_bytes(b"picture")
    linked = store.tmp / "image.png"
    os.link(original, linked)
    sha, _ = store.put_file(linked, move=True)
    assert linked.exists() and os.stat(store.object_path(sha)).st_nlink == 1
    original.write_bytes(b"changed")  # the linked file changes in place: the object does not
    assert store.object_path(sha).read_bytes() == b"picture"
