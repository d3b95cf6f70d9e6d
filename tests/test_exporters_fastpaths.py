"""The exporters' hand-built JSON lines equal what the json module writes, on awkward text."""

from __future__ import annotations

import json

import pytest

from tests._release_util import context
from vlitc.ops.exporters.llava import LlavaExporter
from vlitc.ops.exporters.sharegpt import ShareGptExporter
from vlitc.records import sample

ODD = ["quote \" and backslash \\", "tab\tnew\nline\rreturn", "control \x01\x1f end",
       "line sep \u2028 para sep \u2029", "non-ASCII: café, 東京, emoji 🐱", "</script><b>&amp;",
       "  leading and trailing  ", "{\"looks\": [\"like\", \"json\"]}"]


def _samples():
    out = []
    for i, text in enumerate(ODD):
        out.append(sample(f"odd/{i}", "odd", [{"role": "user", "content": text},
                                              {"role": "assistant", "content": text[::-1]}],
                          source="text"))
    return out


@pytest.mark.parametrize("exporter,path", [(LlavaExporter, "t.json"), (ShareGptExporter, "t.jsonl")])
def test_awkward_text_round_trips_exactly(tmp_path, exporter, path):
    ctx = context(tmp_path)
    exporter({"path": path}).export(_samples(), ctx)
    raw = (ctx.out_dir / path).read_text(encoding="utf-8")
    rows = json.loads(raw) if path.endswith(".json") else [json.loads(x) for x in raw.split("\n") if x]
    assert len(rows) == len(ODD)
    for row, text in zip(rows, ODD, strict=True):
        turns = row.get("conversations") or row.get("messages")
        values = [t.get("value", t.get("content")) for t in turns]
        assert values == [text, text[::-1]]


@pytest.mark.exercises("exporter.llava")
def test_llava_lines_match_the_json_module(tmp_path):
    ctx = context(tmp_path)
    LlavaExporter({"path": "t.json"}).export(_samples(), ctx)
    raw = (ctx.out_dir / "t.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    # each record is written exactly as the json module would write it (same escapes, key order)
    for record in data:
        assert json.dumps(record, ensure_ascii=False) in raw or json.dumps(record) in raw


def test_one_image_file_has_one_name_whatever_source_read_it(tmp_path):
    from vlitc.ops.exporters.common import image_prefixes

    shared = tmp_path / "coco" / "train2017"
    other = tmp_path / "vg" / "images"
    shared.mkdir(parents=True)
    other.mkdir(parents=True)
    assert image_prefixes({"coco": shared, "vqa": shared}) == {"coco": "", "vqa": ""}
    assert image_prefixes({"coco": shared, "vqa": shared, "vg": other}) == {
        "coco": "coco/train2017", "vqa": "coco/train2017", "vg": "vg/images"}
    assert image_prefixes({"all": tmp_path, "coco": shared}) == {"all": "", "coco": "coco/train2017"}


def test_an_image_named_again_is_named_as_the_export_it_is_in_names_it():
    """image_ref remembers the last image it named: a sample of the same image in another
    export (other folder prefixes), or another path, is named afresh."""
    from vlitc.ops.exporters.common import _PREFIXES, _image_ref, image_ref

    img = {"root": "coco", "path": "a/1.jpg"}
    seen = []
    for prefixes in (None, {"coco": ""}, {"coco": "train"}, None, {"coco": "train"}):
        token = _PREFIXES.set(prefixes)
        try:
            for path in ("a/1.jpg", "a/1.jpg", "../up.jpg", "a/1.jpg"):
                got = image_ref({**img, "path": path})
                assert got == _image_ref("coco", path, prefixes)
                seen.append(got)
        finally:
            _PREFIXES.reset(token)
    assert {"coco/a/1.jpg", "a/1.jpg", "train/a/1.jpg"} <= set(seen)
