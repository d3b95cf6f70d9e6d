"""Pinned fingerprints: these literals change only when hashing changes on purpose."""

from __future__ import annotations

import pytest

from vlitc.run.fingerprint import canonical, digest, item_digest, step_key


def test_canonical_json_sorts_keys_and_has_no_spaces():
    assert canonical({"b": 1, "a": [1, 2, {"d": None, "c": "é"}]}) == \
        '{"a":[1,2,{"c":"é","d":null}],"b":1}'.encode()


def test_step_key_is_pinned():
    comp = {"op": "task.template", "version": 1, "params": {"per": "caption"},
            "files": {"a.json": "0" * 64}, "upstream": {"source:coco": "f" * 64}, "seed": 1234}
    assert step_key(comp) == digest(comp)
    assert step_key(comp) == "7bcb1c3d3ab2881b8ed5f8096d3066ea7ae3eff96cd4d9383cc2b88af525a3d5"
    assert digest({"a": 1}) == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"


def test_item_digest_ignores_stats_and_drop_marks():
    s = {"id": "x", "turns": [{"role": "user", "content": "hi"}], "meta": {"a": 1}}
    marked = {**s, "meta": {"a": 1, "stats": {"f": {"n": 2}}, "drop": {"filter": "f", "reason": "r"}}}
    assert item_digest(s) == item_digest(marked)
    assert item_digest(s) == "e7674cfc025a954e3c8e5645f075a0020bea55b4c299d97cc6b96b063435989f"


def test_unhashable_values_raise_instead_of_a_random_fingerprint():
    with pytest.raises(TypeError):
        digest({"x": object()})
    with pytest.raises(ValueError):
        digest({"x": float("nan")})


def test_grounding_keeps_an_empty_object_layer():
    from vlitc.records import grounding, image_record

    annotated = image_record("1", "coco", {"root": "coco", "path": "a.png", "width": 4, "height": 3},
                             captions=["a dog"], objects=[])
    unannotated = image_record("2", "coco", None, captions=["a dog"])
    assert grounding(annotated) == {"width": 4, "height": 3, "objects": [], "captions": ["a dog"]}
    assert grounding(unannotated) == {"captions": ["a dog"]}  # reference captions ground too


def test_one_canonical_json_serves_step_keys_llm_keys_and_release_diffs():
    from vlitc import hashing
    from vlitc.llm import types
    from vlitc.release import diff
    from vlitc.run import fingerprint

    assert fingerprint.canonical is hashing.canonical and types.canonical is hashing.canonical
    assert diff._fingerprint({"image": None, "turns": []}) == hashing.digest({"image": None, "turns": []})


def test_llm_request_bytes_are_unchanged():
    """The request key is the sha256 of these exact bytes (orjson, sorted keys, compact)."""
    import json

    from vlitc.llm.types import canonical

    req = {"provider": "openai", "model": "m", "temperature": 0.7, "top_p": None, "n": 2,
           "messages": [{"role": "user", "content": "Wie viele Katzen? \u00e9\u4e2d\U0001f600\n\t\"q\""}]}
    assert canonical(req) == json.dumps(req, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode()
    assert canonical({2: "a", "1": "b"}) == b'{"1":"b","2":"a"}'


def test_a_content_digest_takes_nan_from_a_dataset_without_stopping_the_build():
    s = {"id": "x", "turns": [], "meta": {"annotations": {"objects": [{"bbox": [float("nan")]}]}}}
    assert len(item_digest(s)) == 64
