"""Image checks: existence, decodability, size, sha256 remembered by (path, size, mtime), and the
missing-image policy of the sources."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests._sources_util import (
    FIXTURE_IMAGE,
    FIXTURE_IMAGE_DIR,
    DictStore,
    load,
    make_ctx,
    make_image,
    write_json,
)
from vlitc import boxes
from vlitc.errors import InputError
from vlitc.images import ImageChecker


def test_checker_reads_size_and_hash_of_the_real_fixture_image(fixtures_dir):
    root = fixtures_dir / FIXTURE_IMAGE_DIR
    info = ImageChecker(root).check([FIXTURE_IMAGE])[FIXTURE_IMAGE]
    assert (info.width, info.height, info.error) == (640, 480, None)
    assert info.sha256 == hashlib.sha256((root / FIXTURE_IMAGE).read_bytes()).hexdigest()


def test_unchanged_images_are_not_hashed_again_and_a_changed_one_is(tmp_path):
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.jpg", color="blue")
    store = DictStore()
    first = ImageChecker(tmp_path, store)
    infos = first.check(["a.jpg", "b.jpg"])
    assert (first.computed, first.hits) == (2, 0)
    again = ImageChecker(tmp_path, store)
    assert again.check(["a.jpg", "b.jpg"]) == infos
    assert (again.computed, again.hits) == (0, 2)
    make_image(tmp_path / "b.jpg", (50, 50), color="green")
    st = os.stat(tmp_path / "b.jpg")
    os.utime(tmp_path / "b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = ImageChecker(tmp_path, store)
    changed = third.check(["a.jpg", "b.jpg"])
    assert (third.computed, third.hits) == (1, 1)
    assert changed["b.jpg"].width == 50 and changed["b.jpg"].sha256 != infos["b.jpg"].sha256


def test_header_only_results_are_recomputed_when_decoding_is_asked(tmp_path):
    make_image(tmp_path / "a.jpg")
    store = DictStore()
    ImageChecker(tmp_path, store, decode=False).check(["a.jpg"])
    deep = ImageChecker(tmp_path, store, decode=True)
    deep.check(["a.jpg"])
    assert deep.computed == 1


def test_truncated_image_is_corrupt_only_when_decoded(tmp_path):
    make_image(tmp_path / "ok.png", (200, 200))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert ImageChecker(tmp_path, decode=False).check(["cut.png"])["cut.png"].error is None
    err = ImageChecker(tmp_path, decode=True).check(["cut.png"])["cut.png"].error
    assert err is not None and err.startswith("corrupt:")


def test_images_checked_in_worker_processes_give_what_the_build_process_finds(tmp_path, monkeypatch):
    from vlitc import images
    from vlitc.run.engine import Execution, LocalEngine

    names = [f"{i}.png" for i in range(9)]
    for i, name in enumerate(names[:-2]):
        make_image(tmp_path / name, (10 + i, 20), color="blue" if i % 2 else "red")
    (tmp_path / names[-2]).write_bytes(b"not an image")  # corrupt; the last one is missing
    here = ImageChecker(tmp_path).check(names)
    monkeypatch.setattr(images, "MAP_CHUNK", 2)  # five chunks of at most two images
    engine = LocalEngine(Execution(workers=2))
    try:
        spread = ImageChecker(tmp_path, map=engine.map)
        assert spread.check(names) == here and spread.computed == 8  # the missing one: no read
    finally:
        engine.close()
    assert here[names[-1]].error == "missing" and here[names[-2]].error.startswith("corrupt:")
    assert here["3.png"].width == 13 and here["3.png"].sha256


def _coco(tmp_path):
    write_json(tmp_path / "c.json", {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2, 3)],
        "annotations": [{"id": i, "image_id": i, "caption": f"caption {i}"} for i in (1, 2, 3)]})
    make_image(tmp_path / "img" / "1.jpg")
    (tmp_path / "img" / "3.jpg").write_bytes(b"not an image")


def test_missing_and_corrupt_images_are_skipped_counted_and_listed(tmp_path):
    _coco(tmp_path)
    store = DictStore()
    ctx = make_ctx(tmp_path, store=store)
    recs = load("coco", {"captions": "c.json", "images": "img"}, ctx)
    assert [r["id"] for r in recs] == ["1"]
    assert recs[0]["image"]["sha256"] == hashlib.sha256(
        (tmp_path / "img" / "1.jpg").read_bytes()).hexdigest()
    assert ctx.counters["missing_image"] == 1 and ctx.counters["corrupt_image"] == 1
    assert ctx.notes["skipped_images"] == ["2.jpg", "3.jpg"]
    assert ctx.counters["images_hashed"] == 2
    ctx2 = make_ctx(tmp_path, store=store)
    load("coco", {"captions": "c.json", "images": "img"}, ctx2)
    assert ctx2.counters["images_remembered"] == 2 and ctx2.counters.get("images_hashed") == 0


def test_on_missing_image_error_names_the_image(tmp_path):
    _coco(tmp_path)
    with pytest.raises(InputError) as e:
        load("coco", {"captions": "c.json", "images": "img", "on_missing_image": "error"},
             make_ctx(tmp_path))
    assert e.value.location.file == str(tmp_path / "img" / "2.jpg")
    assert "on_missing_image: skip" in str(e.value)


def test_existence_only_check_reads_no_image(tmp_path):
    _coco(tmp_path)
    recs = load("coco", {"captions": "c.json", "images": "img", "check_images": False,
                         "hash_images": False}, make_ctx(tmp_path))
    assert [r["id"] for r in recs] == ["1", "3"]  # 3.jpg exists; its bytes were not read
    assert recs[1]["image"] == {"root": "coco", "path": "3.jpg", "width": 64, "height": 48,
                                "sha256": None}


def test_missing_images_folder_is_an_input_error(tmp_path):
    _coco(tmp_path)
    with pytest.raises(InputError, match="images: folder not found"):
        load("coco", {"captions": "c.json", "images": "nowhere"}, make_ctx(tmp_path))


@pytest.mark.parametrize("fmt, raw", [
    ("xywh", [10, 20, 30, 40]), ("normalized", [0.1, 0.2, 0.5, 0.9]),
    ("thousand", [100, 200, 500, 900]), ("square_padded", [0.1, 0.3, 0.5, 0.6]),
])
def test_box_formats_round_trip_through_canonical_pixels(fmt, raw):
    from vlitc.ops.sources._common import to_pixels

    w, h = 640, 480
    px = to_pixels(raw, fmt, w, h)
    back = {"xywh": lambda b: boxes.to_xywh(b),
            "normalized": lambda b: boxes.to_normalized(b, w, h),
            "thousand": lambda b: boxes.to_thousand(b, w, h),
            "square_padded": lambda b: boxes.to_square_padded_normalized(b, w, h, None)}[fmt](px)
    assert back == pytest.approx(raw)
    assert px[2] > px[0] and px[3] > px[1]


def test_every_source_has_a_docstring_and_a_strict_schema():
    from vlitc.ops import registry

    for name in registry.names("source"):
        cls = registry.get("source", name)
        assert (cls.__doc__ or "").strip(), name
        assert cls.params_schema["additionalProperties"] is False, name
        for key in cls.file_params:
            assert key in cls.params_schema["properties"], (name, key)
        if any(k in cls.params_schema["properties"] for k in ("images",)):
            assert "on_missing_image" in cls.params_schema["properties"], name
