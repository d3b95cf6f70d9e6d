"""COCO-format source and the join source, on the real COCO fixture files read in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._sources_util import (
    COCO_SAMPLES,
    FIXTURE_IMAGE,
    FIXTURE_IMAGE_DIR,
    FIXTURE_IMAGE_SHA256_16,
    load,
    make_ctx,
    write_json,
)
from vlitc.errors import InputError

EXPECTED_39769 = {  # the 6 real instances of image 39769, COCO xywh -> pixel x1, y1, x2, y2
    1108446: ("remote", [332.89, 79.57, 371.54, 185.88]),
    1110067: ("remote", [41.88, 74.2, 175.03, 119.3]),
    1605237: ("couch", [1.08, 0.0, 639.64, 473.53]),
    1612051: ("bed", [1.07, 1.18, 640.0, 479.03]),
    2190839: ("cat", [17.5, 54.38, 318.75, 469.38]),
    2190842: ("cat", [347.5, 25.63, 640.0, 369.38]),
}


def instances_39769(fixtures_dir: Path, tmp_path: Path) -> Path:
    """A COCO instances file for image 39769: its real annotations (transformers fixture) and the
    real COCO category list (instances_val2014 sample)."""
    anns = json.loads((fixtures_dir / "transformers/tests/fixtures/tests_samples/COCO/"
                       "coco_annotations.txt").read_text())
    cats = json.loads((fixtures_dir / COCO_SAMPLES / "instances_val2014.json_samples.json")
                      .read_text())["categories"]
    return write_json(tmp_path / "instances.json", {
        "images": [{"id": 39769, "file_name": FIXTURE_IMAGE, "width": 640, "height": 480}],
        "annotations": anns, "categories": cats})


@pytest.mark.exercises("source.coco")
def test_coco_samples_load_captions_and_instances_by_image_id(fixtures_dir):
    ctx = make_ctx(fixtures_dir / COCO_SAMPLES)
    recs = load("coco", {"captions": "captions_val2014.json_samples.json",
                         "instances": "instances_val2014.json_samples.json"}, ctx)
    assert len(recs) == 100
    by_id = {r["id"]: r for r in recs}
    assert len(by_id["331352"]["captions"]) == 4
    dog = by_id["173350"]["objects"]
    assert [(o["category"], o["bbox"]) for o in dog] == [("dog", [266.67, 0.0, 468.36, 269.58])]
    assert by_id["173350"]["meta"]["image_file"] == "COCO_val2014_000000173350.jpg"
    # the samples' annotations mostly name images the sample does not list: counted, not loaded
    assert ctx.counters["annotation_unknown_image"] == 99 + 96
    assert len(ctx.notes["annotation_unknown_image"]["examples"]) == 5


def test_segmentation_polygons_are_not_kept(fixtures_dir):
    ctx = make_ctx(fixtures_dir / COCO_SAMPLES)
    recs = load("coco", {"instances": "instances_val2014.json_samples.json"}, ctx)
    objs = [o for r in recs for o in r.get("objects", [])]
    assert objs and all(set(o) == {"id", "category", "bbox", "attributes", "iscrowd"} for o in objs)


def test_fixture_image_39769_carries_its_six_real_instances_size_and_hash(fixtures_dir, tmp_path):
    inst = instances_39769(fixtures_dir, tmp_path)
    ctx = make_ctx(tmp_path)
    (rec,) = load("coco", {"instances": str(inst),
                           "images": str(fixtures_dir / FIXTURE_IMAGE_DIR)}, ctx)
    assert rec["id"] == "39769"
    img = rec["image"]
    assert (img["root"], img["path"], img["width"], img["height"]) == ("coco", FIXTURE_IMAGE, 640, 480)
    assert img["sha256"].startswith(FIXTURE_IMAGE_SHA256_16)
    got = {o["id"]: (o["category"], o["bbox"]) for o in rec["objects"]}
    assert got == EXPECTED_39769
    assert "box_outside_image" not in ctx.counters  # the bed and right cat end exactly at x=640


def test_joined_record_39769_merges_coco_vqa_and_refcoco_layers(fixtures_dir, tmp_path):
    inst = instances_39769(fixtures_dir, tmp_path)
    images = str(fixtures_dir / FIXTURE_IMAGE_DIR)
    coco = load("coco", {"instances": str(inst), "images": images}, make_ctx(tmp_path))
    qs = write_json(tmp_path / "q.json", {"data_subtype": "val2017", "questions": [
        {"image_id": 39769, "question": "How many cats are there?", "question_id": 397690}]})
    an = write_json(tmp_path / "a.json", {"annotations": [
        {"image_id": 39769, "question_id": 397690, "answer_type": "number",
         "question_type": "how many", "multiple_choice_answer": "2",
         "answers": [{"answer": a, "answer_id": i + 1} for i, a in
                     enumerate(["2", "2", "two", "2", "2", "3", "2", "2", "2", "2"])]}]})
    vqa = load("vqa_v2", {"questions": str(qs), "annotations": str(an)}, make_ctx(tmp_path), "vqa")
    refs = write_json(tmp_path / "refs.json", [
        {"ref_id": 1, "ann_id": 2190839, "image_id": 39769, "split": "val", "category_id": 17,
         "sentences": [{"raw": "cat on the left", "sent": "cat on the left"}]}])
    ref = load("refcoco", {"refs": str(refs), "instances": str(inst), "images": images},
               make_ctx(tmp_path), "refcoco")
    ctx = make_ctx(tmp_path, inputs={"source:coco": coco, "source:vqa": vqa,
                                     "source:refcoco": ref})
    (rec,) = load("join", {"sources": ["coco", "vqa", "refcoco"]}, ctx, "joined")
    assert rec["id"] == "39769" and rec["source"] == "coco+vqa+refcoco"
    assert rec["image"]["root"] == "coco" and rec["image"]["width"] == 640
    assert {o["id"]: (o["category"], o["bbox"]) for o in rec["objects"]} == EXPECTED_39769
    assert rec["qas"][0]["answer"] == "2" and rec["qas"][0]["agreement"] == 1.0
    assert rec["regions"] == [{"phrase": "cat on the left", "bbox": [17.5, 54.38, 318.75, 469.38],
                               "kind": "ref", "category": "cat", "ref_id": 1, "ann_id": 2190839}]
    assert ctx.counters["joined_records"] == 1


@pytest.mark.exercises("source.join")
def test_join_shifts_relation_indices_and_counts_unmatched_ids(tmp_path):
    a = [{"id": "1", "source": "a", "image": None, "objects": [{"category": "x"}], "meta": {}},
         {"id": "2", "source": "a", "image": None, "captions": ["c"], "meta": {}}]
    b = [{"id": "1", "source": "b", "image": None, "objects": [{"category": "y"}, {"category": "z"}],
          "relations": [{"subject": 0, "predicate": "on", "object": 1}], "meta": {}},
         {"id": "3", "source": "b", "image": None, "captions": ["d"], "meta": {}}]
    inputs = {"source:a": a, "source:b": b}
    left = load("join", {"sources": ["a", "b"]}, make_ctx(tmp_path, inputs=inputs), "j")
    assert [r["id"] for r in left] == ["1", "2"]
    assert left[0]["relations"] == [{"subject": 1, "predicate": "on", "object": 2}]
    inputs = {"source:a": json.loads(json.dumps(a)), "source:b": json.loads(json.dumps(b))}
    ctx = make_ctx(tmp_path, inputs=inputs)
    inner = load("join", {"sources": ["a", "b"], "how": "inner"}, ctx, "j")
    assert [r["id"] for r in inner] == ["1"]
    assert ctx.notes["unmatched:b"] == {"count": 1, "examples": ["3"]}
    inputs = {"source:a": json.loads(json.dumps(a)), "source:b": json.loads(json.dumps(b))}
    outer = load("join", {"sources": ["a", "b"], "how": "outer"}, make_ctx(tmp_path, inputs=inputs))
    assert [r["id"] for r in outer] == ["1", "2", "3"]


def test_join_declares_its_sources_as_references():
    from vlitc.ops import registry

    op = registry.get("source", "join")({"sources": ["coco", "vqa"]}, "both")
    assert op.references() == {"source": ["coco", "vqa"]}


def test_malformed_annotation_file_is_a_located_error(tmp_path):
    bad = tmp_path / "captions.json"
    bad.write_text('{"images": [],\n  "annotations": [\n    {"image_id": 1,, "caption": "x"}]}')
    with pytest.raises(InputError) as e:
        load("coco", {"captions": "captions.json"}, make_ctx(tmp_path))
    assert e.value.location.file == str(bad)
    assert (e.value.location.line, e.value.location.column) == (3, 20)


def test_wrong_file_is_a_located_error_naming_the_missing_field(tmp_path):
    write_json(tmp_path / "x.json", {"questions": []})
    with pytest.raises(InputError, match="no 'images' field"):
        load("coco", {"instances": "x.json"}, make_ctx(tmp_path))


def test_unknown_category_and_box_outside_image_are_counted_not_fatal(tmp_path):
    write_json(tmp_path / "i.json", {
        "images": [{"id": 5, "file_name": "5.jpg", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "bbox": [90, 10, 30, 20], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 99, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 1, "bbox": [10, 10, 5, 5], "iscrowd": 1},
            {"id": 4, "image_id": 5, "category_id": 1, "bbox": [200, 10, 5, 5], "iscrowd": 0}]})
    ctx = make_ctx(tmp_path)
    (rec,) = load("coco", {"instances": "i.json"}, ctx)
    assert [(o["id"], o["bbox"], o["iscrowd"]) for o in rec["objects"]] == [
        (1, [90.0, 10.0, 100.0, 30.0], False), (3, [10.0, 10.0, 15.0, 15.0], True)]
    assert ctx.counters == {"box_outside_image": 2, "unknown_category": 1, "empty_box": 1}
    assert ctx.notes["unknown_category"]["examples"] == [{"annotation": 2, "category_id": 99}]
    (rec,) = load("coco", {"instances": "i.json", "crowd": False}, make_ctx(tmp_path))
    assert [o["id"] for o in rec["objects"]] == [1]


def test_missing_file_param_is_a_located_error(tmp_path):
    with pytest.raises(InputError, match="captions: file not found"):
        load("coco", {"captions": "nope.json"}, make_ctx(tmp_path))


def test_an_annotation_file_reads_the_same_whether_or_not_it_names_a_dropped_key(tmp_path):
    from vlitc.ops.sources._common import read_json

    plain = {"images": [{"id": 1, "big": 2**70, "x": 0.1 + 0.2, "s": "caf\u00e9 \U0001f600"}],
             "annotations": [{"id": 1, "image_id": 1, "caption": "two cats", "area": 1e-7}]}
    path = write_json(tmp_path / "plain.json", plain)  # orjson refuses the big int: json reads it
    assert read_json(path, drop=("segmentation",)) == plain
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "segmentation": [[1, 2]]}]}))
    assert read_json(path, drop=("segmentation",)) == {"images": [], "annotations": [{"id": 1}]}
    path.write_text('{"images": [\n  {"id": 1},\n]}')
    with pytest.raises(InputError) as got:
        read_json(path, drop=("segmentation",))
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as e:
        expected = (f"malformed JSON: {e.msg}", e.lineno, e.colno)
    assert (got.value.message, got.value.location.line, got.value.location.column) == expected


def _coco_doc(n_images: int = 40) -> dict:
    """A captions-and-instances file whose captions hold what a block cut could trip on."""
    tricky = ['a "quoted" }, {"image_id": 3} cat', "caf\u00e9 }]} \U0001f600", "back\\slash }",
              "}, {", "plain words here"]
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480 + i % 3,
               "license": 1} for i in range(1, n_images + 1)]
    anns = [{"id": k, "image_id": 1 + (k * 7) % (n_images + 3), "caption": tricky[k % len(tricky)],
             "bbox": [1, 2, 3, 4], "category_id": 1} for k in range(1, 6 * n_images)]
    anns.append({"id": 9999, "image_id": 2, "caption": 17})  # not text: kept out of captions
    return {"info": {"year": 2014, "note": "}, {"}, "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, "not a category"], "type": "captions"}


def _parsed(path: Path, captions: bool) -> tuple:
    from vlitc.ops.sources._common import Issues
    from vlitc.ops.sources.coco import CocoFile

    ctx = make_ctx(path.parent)
    issues = Issues(ctx)
    f = CocoFile(path, issues, captions=captions)
    return (f.images, f.by_image, f.categories, ctx.counters, issues.examples)


@pytest.mark.parametrize("layout", ["compact", "indented", "segmentation", "images_last", "repeated"])
def test_a_coco_file_read_in_blocks_gives_what_reading_it_whole_gives(layout, tmp_path, monkeypatch):
    """The file is read in small blocks (cuts land inside captions, nested values and the
    image list's end); a layout the blocks do not follow is read whole, for the same result."""
    from vlitc.ops.sources import _common
    from vlitc.ops.sources.coco import CocoFile

    doc = _coco_doc()
    if layout == "segmentation":
        for a in doc["annotations"][::3]:
            a["segmentation"] = [[1.5, 2, 3, 4]]
        doc["info"]["segmentation"] = "dropped too"
    if layout == "images_last":
        doc = {"annotations": doc["annotations"], "images": doc["images"],
               "categories": doc["categories"]}
    path = tmp_path / "c.json"
    text = json.dumps(doc, indent=2 if layout == "indented" else None, ensure_ascii=False)
    if layout == "repeated":
        text = text[:-1] + ', "categories": []}'  # the last one counts (categories: none)
    path.write_text(text, encoding="utf-8")
    whole_calls = []
    real_whole = CocoFile._whole

    def whole(self, p):
        whole_calls.append(p)
        return real_whole(self, p)

    monkeypatch.setattr(CocoFile, "_whole", whole)
    monkeypatch.setattr(_common._MemberReader, "BLOCK", 256)
    for captions in (True, False):
        whole_calls.clear()
        got = _parsed(path, captions)
        assert whole_calls == ([path] if layout in ("images_last", "repeated") else [])
        assert got == real_whole_parsed(path, captions, monkeypatch, real_whole)
    images, by_image, cats, counters, _ = _parsed(path, True)
    assert len(images) == 40 and cats == ({} if layout == "repeated" else {1: "cat"})
    assert by_image[2][-1] == 17 and "}, {" in by_image[2]
    assert counters["annotation_unknown_image"] == sum(1 for a in doc["annotations"]
                                                      if a["image_id"] > 40)


def real_whole_parsed(path: Path, captions: bool, monkeypatch, real_whole) -> tuple:
    from vlitc.ops.sources.coco import CocoFile

    with monkeypatch.context() as m:
        m.setattr(CocoFile, "_blocks", lambda self, p: real_whole(self, p))
        return _parsed(path, captions)


@pytest.mark.parametrize("text", [
    '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "x"},]}',
    '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]} extra',
    '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "\\ud800"}]}',
    '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": NaN}]}',
    '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]',
])
def test_a_malformed_coco_file_read_in_blocks_is_the_located_error_of_reading_it_whole(text, tmp_path,
                                                                                    monkeypatch):
    from vlitc.ops.sources import _common

    path = tmp_path / "captions.json"
    path.write_text(text)
    with pytest.raises(InputError) as whole:
        _common.read_json(path, drop=("segmentation",))
    monkeypatch.setattr(_common._MemberReader, "BLOCK", 16)
    with pytest.raises(InputError) as got:
        load("coco", {"captions": "captions.json"}, make_ctx(tmp_path))
    assert (got.value.message, got.value.location) == (whole.value.message, whole.value.location)


def test_an_annotation_of_the_wrong_shape_read_in_blocks_is_the_error_of_reading_it_whole(tmp_path):
    write_json(tmp_path / "captions.json", {"images": [{"id": 1, "file_name": "1.jpg"}],
                                            "annotations": [{"image_id": 1, "caption": "x"}, "oops"]})
    with pytest.raises(InputError, match="published shape .AttributeError") as e:
        load("coco", {"captions": "captions.json"}, make_ctx(tmp_path))
    assert e.value.location.file == str(tmp_path / "captions.json")


def _streamed_and_listed(path: Path, params: dict, monkeypatch) -> tuple[tuple, tuple]:
    """The entries (and the counts and examples) of a COCO file grouped on disk, in partitions
    of 8 images, and read in memory."""
    from vlitc.ops.sources import coco
    from vlitc.ops.sources._common import Issues

    def read(spill: bool) -> tuple:
        ctx = make_ctx(path.parent)
        issues = Issues(ctx)
        src = coco.CocoSource(params, "coco")
        with monkeypatch.context() as m:
            m.setattr(coco, "SPILL_MIN_BYTES", 0 if spill else 1 << 62)
            m.setattr(coco, "SPILL_MIN_IMAGES", 8)
            m.setattr(coco, "SPILL_PARTS", 4)
            stream = src.stream_entries(ctx, issues)
            assert (stream is not None) == spill
            entries = list(stream) if stream is not None else src.entries(ctx, issues)
        return entries, src.categories, ctx.counters, issues.examples

    return read(True), read(False)


@pytest.mark.parametrize("captions", [True, False])
@pytest.mark.parametrize("keep_empty", [True, False])
def test_a_large_coco_file_grouped_on_disk_gives_the_entries_read_in_memory(captions, keep_empty,
                                                                             tmp_path, monkeypatch):
    """Annotations in no order (some naming no listed image, some a string id), images whose ids
    are out of order, over several partitions and blocks: the same entries, in the same order,
    with the same counts and examples."""
    from vlitc.ops.sources import _common

    doc = _coco_doc(40)
    doc["images"].reverse()
    doc["annotations"].append({"id": 10000, "image_id": "7", "caption": "a string id names no image"})
    path = write_json(tmp_path / "c.json", doc)
    monkeypatch.setattr(_common._MemberReader, "BLOCK", 512)
    param = "captions" if captions else "instances"
    spilled, listed = _streamed_and_listed(path, {param: "c.json", "keep_empty": keep_empty}, monkeypatch)
    assert spilled == listed
    entries = spilled[0]
    annotated = {a["image_id"] for a in doc["annotations"]}
    assert [e.rid for e in entries] == [str(im["id"]) for im in doc["images"]
                                        if keep_empty or im["id"] in annotated]
    assert spilled[2]["annotation_unknown_image"] == sum(1 for a in doc["annotations"]
                                                        if not isinstance(a["image_id"], int) or a["image_id"] > 40)


@pytest.mark.parametrize("change", ["float_image_id", "repeated_image", "bool_image_id", "images_last",
                                    "list_image_id"])
def test_a_large_coco_file_the_disk_grouping_does_not_read_is_read_in_memory(change, tmp_path, monkeypatch):
    """Ids that only compare equal to integers, a repeated image, images after annotations:
    read in memory instead, for the same entries (or the same located error)."""
    doc = _coco_doc(12)
    if change == "float_image_id":
        doc["annotations"][0]["image_id"] = 3.0
    elif change == "bool_image_id":
        doc["annotations"][0]["image_id"] = True
    elif change == "repeated_image":
        doc["images"].append({"id": 5, "file_name": "again.jpg", "width": 1, "height": 1})
    elif change == "images_last":
        doc = {"annotations": doc["annotations"], "images": doc["images"]}
    elif change == "list_image_id":
        doc["annotations"][0]["image_id"] = [1]
    path = write_json(tmp_path / "c.json", doc)
    if change == "list_image_id":  # unhashable: the published-shape error of reading it whole
        with pytest.raises(InputError, match="published shape") as got:
            load("coco", {"captions": "c.json"}, make_ctx(tmp_path))
        from vlitc.ops.sources import coco

        monkeypatch.setattr(coco, "SPILL_MIN_BYTES", 0)
        with pytest.raises(InputError, match="published shape") as spilled:
            load("coco", {"captions": "c.json"}, make_ctx(tmp_path))
        assert (spilled.value.message, spilled.value.location) == (got.value.message, got.value.location)
        return
    spilled, listed = _streamed_and_listed(path, {"captions": "c.json"}, monkeypatch)
    assert spilled == listed


def test_a_large_coco_file_builds_the_records_of_one_read_in_memory(tmp_path, monkeypatch):
    from vlitc.ops.sources import coco

    doc = _coco_doc(30)
    write_json(tmp_path / "c.json", doc)
    params = {"captions": "c.json", "limit": 25}
    listed = load("coco", params, make_ctx(tmp_path))
    monkeypatch.setattr(coco, "SPILL_MIN_BYTES", 0)
    monkeypatch.setattr(coco, "SPILL_MIN_IMAGES", 4)
    made = []
    real = coco.SpilledCocoFile.__init__

    def spy(self, *a, **k):
        made.append(self)
        real(self, *a, **k)

    monkeypatch.setattr(coco.SpilledCocoFile, "__init__", spy)
    assert load("coco", params, make_ctx(tmp_path)) == listed
    assert made and len(listed) == 25


def test_a_build_groups_a_large_coco_file_in_the_cache_tmp_folder_and_leaves_nothing_there(tmp_path,
                                                                                          monkeypatch):
    from PIL import Image

    from vlitc import api
    from vlitc.ops.sources import coco

    doc = _coco_doc(12)
    (tmp_path / "images").mkdir()
    for im in doc["images"]:
        Image.new("RGB", (8, 6), (200, 30, 30)).save(tmp_path / "images" / im["file_name"], format="JPEG")
    write_json(tmp_path / "captions.json", doc)
    (tmp_path / "recipe.yaml").write_text(
        "vlitc: 1\nname: spill\nversion: 0.0.1\nseed: 1\n"
        "sources:\n  coco: {type: coco, images: images, captions: captions.json}\n"
        "tasks:\n  brief: {kind: brief_caption, source: coco}\n"
        "outputs:\n  - {format: llava, path: train.json}\nreport: false\n")
    built = {}
    for spill in (False, True):
        monkeypatch.setattr(coco, "SPILL_MIN_BYTES", 0 if spill else 1 << 62)
        used: list[Path] = []
        real = coco.SpilledCocoFile.__init__

        def spy(self, path, workdir, captions=False, _real=real, _used=used):
            _used.append(workdir)
            _real(self, path, workdir, captions=captions)

        monkeypatch.setattr(coco.SpilledCocoFile, "__init__", spy)
        cache = tmp_path / f"cache-{spill}"
        api.build(tmp_path / "recipe.yaml", out_dir=tmp_path / f"out-{spill}", cache_dir=cache)
        assert [p.parent for p in used] == ([cache / "tmp"] if spill else [])
        assert not any((cache / "tmp").iterdir())
        built[spill] = (tmp_path / f"out-{spill}" / "train.json").read_bytes()
    assert built[True] == built[False] and built[True].count(b'"id"') > 12


def test_a_member_name_is_found_in_blocks_across_their_edge_and_never_where_it_is_not(tmp_path, monkeypatch):
    """Whether a file names a member is searched block by block (never through a map of the
    whole file); a name cut by a block's edge is still found."""
    from vlitc.ops.sources import _common

    monkeypatch.setattr(_common, "MEMBER_BLOCK", 16)
    path = tmp_path / "caps.json"
    for pad in range(0, 40):
        path.write_bytes(b'{"images": [' + b" " * pad + b'], "licenses": []}')
        assert _common.names_key(path, ("licenses",))
        assert _common.names_key(path, ("info", "images"))
        assert not _common.names_key(path, ("info",))
        assert not _common.names_key(path, ("license",))  # the name itself, quoted
    path.write_bytes(b"")
    assert not _common.names_key(path, ("images",))
