"""Decoding only the fields a reader looks at (:mod:`vlitc.run.projection`)."""

from __future__ import annotations

import orjson
import pytest
from _core_util import demo_copy

from vlitc.api import build
from vlitc.run.projection import Projection, paths_of, top_fields

EXPORT_READS = ("id", "task", "source", "image", "turns", "meta.split?")


def test_a_declaration_names_its_paths_and_top_fields():
    assert paths_of(["a|b.c", "meta.split?", "d|e?"]) == [("a",), ("b", "c"), ("meta", "split"), ("d",), ("e",)]
    assert top_fields(EXPORT_READS) == {"id", "task", "source", "image", "turns", "meta"}


def test_a_line_is_decoded_into_the_fields_declared_in_its_own_order():
    p = Projection(EXPORT_READS)
    line = orjson.dumps({"turns": [{"role": "user", "content": "<image>\nhi"}], "id": "s/1",
                         "image": {"root": "coco", "path": "1.jpg", "sha256": "ab"},
                         "meta": {"annotations": {"captions": ["a cat"] * 5}, "split": "validation"},
                         "extra": {"big": list(range(50))}})
    got = p.loads(line)
    assert got == {"turns": [{"role": "user", "content": "<image>\nhi"}], "id": "s/1",
                   "image": {"root": "coco", "path": "1.jpg", "sha256": "ab"}, "meta": {"split": "validation"}}
    assert list(got) == ["turns", "id", "image", "meta"]  # absent fields stay absent
    assert p.loads(b'{"id": "x", "meta": {}}') == {"id": "x", "meta": {}}


def test_a_whole_field_takes_in_its_parts_and_any_key_is_a_field():
    p = Projection(("meta", "meta.split", "a b.c|d?"))
    assert p.fields == {"meta", "a b", "d"}
    line = b'{"meta": {"x": [1]}, "a b": {"c": 1, "e": 2}, "d": null, "z": 0}'
    assert p.loads(line) == {"meta": {"x": [1]}, "a b": {"c": 1}, "d": None}


@pytest.mark.parametrize("line", [b'{"id": "x", "meta": null, "more": 1}',
                                  b'{"id": "x", "meta": [1, 2]}', b'[1, 2]', b'"text"'])
def test_a_line_not_of_the_projections_shape_is_decoded_whole(line):
    assert Projection(EXPORT_READS).loads(line) == orjson.loads(line)


def test_values_are_those_a_full_decode_gives():
    """The cache's lines are written by orjson: every value decodes to what orjson reads."""
    record = {"id": "é\u2028\U0001f600\\\"", "task": "t", "source": None, "turns": [1.5e-300, -0.0, 2**64 - 1,
              -2**63, 1e308, 0.1, True, False, None, "", {"": {"": []}}], "image": [{"a": 1}, {"a": 2}]}
    line = orjson.dumps(record)
    got = Projection(EXPORT_READS).loads(line)
    assert got == orjson.loads(line) and orjson.dumps(got) == line
    with pytest.raises(orjson.JSONDecodeError):  # not JSON: an error, as a full decode gives
        Projection(EXPORT_READS).loads(b'{"id": ')


def test_an_export_is_given_the_fields_it_writes_and_writes_the_same_bytes(tmp_path, monkeypatch):
    """A demo build's exports see each sample's declared fields alone (its ``meta`` no more than
    its split), and write what they wrote from whole samples."""
    from vlitc.ops.exporters import llava

    recipe = demo_copy(tmp_path)
    whole = build(recipe, out_dir=tmp_path / "whole", cache_dir=tmp_path / "cw", workers=1)
    seen: list[dict] = []
    line = llava.LlavaExporter.line
    monkeypatch.setattr(llava.LlavaExporter, "line", lambda self, s: seen.append(s) or line(self, s))
    projected = build(recipe, out_dir=tmp_path / "projected", cache_dir=tmp_path / "cp", workers=1)
    assert seen and all(set(s) <= top_fields(EXPORT_READS) for s in seen)
    assert all(set(s.get("meta") or {}) <= {"split"} for s in seen)
    assert llava.LlavaExporter.projected
    assert [o["sha256"] for o in projected.manifest["outputs"]] == [o["sha256"] for o in whole.manifest["outputs"]]
    monkeypatch.setattr(llava.LlavaExporter, "projected", False)
    seen.clear()
    build(recipe, out_dir=tmp_path / "full", cache_dir=tmp_path / "cf", workers=1)
    assert any("annotations" in (s.get("meta") or {}) for s in seen)  # the same samples, whole


def test_a_dedup_sees_the_fields_it_declares(tmp_path, monkeypatch):
    """A dataset-wide filter's features are computed from its declared fields alone (``id``
    among them: a sample out of its scope is named by it), with the same answers."""
    from vlitc.ops.filters.dedup import DedupFilter as Dedup

    recipe = demo_copy(tmp_path)
    whole = build(recipe, out_dir=tmp_path / "whole", cache_dir=tmp_path / "cw", workers=1)
    seen: list[dict] = []
    features = Dedup.features
    monkeypatch.setattr(Dedup, "features", lambda self, samples, ctx: seen.extend(samples) or features(self, samples, ctx))
    projected = build(recipe, out_dir=tmp_path / "projected", cache_dir=tmp_path / "cp", workers=1)
    assert seen and all(set(s) <= top_fields(Dedup.reads) for s in seen) and all("id" in s for s in seen)
    assert [o["sha256"] for o in projected.manifest["outputs"]] == [o["sha256"] for o in whole.manifest["outputs"]]
