"""Image checks: existence, decodability, size, sha256 remembered by (path, size, mtime), and the
missing-image policy of the sources."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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
from vlitc.rows import MemoryRows


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


def _mixed_folder(root):
    """Small images, images over the threads' size bound, a corrupt file and a cut one."""
    import numpy as np
    from PIL import Image

    from vlitc import images

    names = []
    for i in range(6):
        names.append(str(make_image(root / f"small{i}.png", (10 + i, 20)).name))
    rng = np.random.default_rng(0)
    for i in range(5):  # noise does not compress: each file is over the bound
        path = root / "big" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (160 + i, 160, 3), dtype=np.uint8)).save(path)
        assert path.stat().st_size >= images.THREAD_MIN_BYTES
        names.append(f"big/{i}.png")
    (root / "bad.jpg").write_bytes(b"not an image")
    data = (root / "big" / "0.png").read_bytes()
    (root / "big" / "cut.png").write_bytes(data[: len(data) // 2])
    return [*names, "bad.jpg", "big/cut.png", "gone.png"]


class _NoThreads:
    def __init__(self, *a, **k):
        raise AssertionError("small files are checked without threads")


@pytest.mark.parametrize("decode", [False, True])
def test_small_files_inline_and_large_ones_on_threads_give_the_same_infos(tmp_path, monkeypatch,
                                                                          decode):
    from vlitc import images

    names = _mixed_folder(tmp_path)
    mixed = ImageChecker(tmp_path, decode=decode).check(names)
    monkeypatch.setattr(images, "THREAD_MIN_BYTES", 0)
    monkeypatch.setattr(images, "THREAD_MIN_DECODE", 0)
    threaded = ImageChecker(tmp_path, decode=decode).check(names)
    monkeypatch.setattr(images, "THREAD_MIN_BYTES", 1 << 40)
    monkeypatch.setattr(images, "THREAD_MIN_DECODE", 1 << 40)
    monkeypatch.setattr(images, "ThreadPoolExecutor", _NoThreads)
    inline = ImageChecker(tmp_path, decode=decode).check(names)
    assert mixed == threaded == inline
    assert sorted(mixed) == sorted(names)
    assert mixed["big/3.png"].width == 160 and mixed["big/3.png"].height == 163
    assert mixed["bad.jpg"].error.startswith("corrupt: UnidentifiedImageError: cannot identify")
    assert mixed["gone.png"].error == "missing"
    assert (mixed["big/cut.png"].error is not None) == decode


def test_a_folder_of_small_images_is_checked_without_threads(tmp_path, monkeypatch):
    from vlitc import images

    for i in range(40):
        make_image(tmp_path / f"{i}.png", (8, 8 + i))
    monkeypatch.setattr(images, "ThreadPoolExecutor", _NoThreads)
    infos = ImageChecker(tmp_path).check([f"{i}.png" for i in range(40)])
    assert [infos[f"{i}.png"].height for i in range(40)] == [8 + i for i in range(40)]


def test_hashes_known_from_the_folder_signature_are_not_computed_again(tmp_path, monkeypatch):
    from vlitc import images
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "img"
    root.mkdir()
    names = _mixed_folder(root)
    fresh = ImageChecker(root).check(names)
    files = FileState(tmp_path / "files")
    try:
        files.dir_signature(root)
        known = dict(files.known_hashes(root).items())
        assert files.known_hashes(root) == {}  # handed over once
    finally:
        files.close()
    assert known["big/1.png"][2] == fresh["big/1.png"].sha256
    make_image(root / "small0.png", (30, 30), color="green")  # changed since the signature
    st = os.stat(root / "small0.png")
    os.utime(root / "small0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    hashed = []
    real = images.sha256_file
    monkeypatch.setattr(images, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    for decode in (False, True):
        hashed.clear()
        infos = ImageChecker(root, decode=decode, known=MemoryRows(known)).check(names)
        assert hashed == ["small0.png"]
        assert infos == {**ImageChecker(root, decode=decode).check(names)}
        assert infos["small0.png"].width == 30 and infos["big/2.png"] == fresh["big/2.png"]
        assert infos["bad.jpg"].sha256 is None and infos["bad.jpg"].error == fresh["bad.jpg"].error
    sizes_unread = ImageChecker(root, read_size=False, decode=False, known=MemoryRows(known)).check(names)
    assert sizes_unread["big/4.png"].sha256 == fresh["big/4.png"].sha256


def test_a_build_reads_each_image_once_for_its_hash(tmp_path, monkeypatch):
    from vlitc import api, images
    from vlitc.run import fingerprint

    _coco(tmp_path)
    make_image(tmp_path / "img" / "2.jpg", color="blue")
    (tmp_path / "r.yaml").write_text(
        "vlitc: 1\nname: t\nversion: 0.0.1\nsources:\n  coco: {type: coco, captions: c.json, "
        "images: img}\ntasks:\n  cap: {kind: brief_caption, source: coco, min_words: 1}\n"
        "outputs:\n  - {format: llava, path: train.json}\nreport: false\n")
    hashed = []
    for module, name in ((images, "sha256_file"), (fingerprint, "sha256_file_head")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda p, real=real: hashed.append(Path(p).name) or real(p))
    result = api.build(tmp_path / "r.yaml", out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert sorted(n for n in hashed if n.endswith(".jpg")) == ["1.jpg", "2.jpg", "3.jpg"]
    source = next(s for s in result.manifest["steps"] if s["id"] == "source:coco")
    assert source["counters"]["images_hashed"] == 3 and source["counters"]["corrupt_image"] == 1


def test_a_header_only_build_opens_each_jpeg_and_png_once(tmp_path, monkeypatch):
    """With ``check_images: false`` the folder signature's read of each file gives both its
    hash and its header's size: the source's check opens none of them again, and its records
    say what opening them says (a wrong size in the annotations is still told)."""
    from vlitc import api, images

    write_json(tmp_path / "c.json", {
        "images": [{"id": i, "file_name": f"{i}.{ext}", "width": 64, "height": 48}
                   for i, ext in ((1, "jpg"), (2, "png"), (3, "jpg"), (4, "gif"))],
        "annotations": [{"id": i, "image_id": i, "caption": f"caption {i}"} for i in (1, 2, 3, 4)]})
    make_image(tmp_path / "img" / "1.jpg")
    make_image(tmp_path / "img" / "2.png", size=(30, 20))  # the annotations say 64 x 48
    (tmp_path / "img" / "3.jpg").write_bytes(b"not an image")
    make_image(tmp_path / "img" / "4.gif")
    (tmp_path / "r.yaml").write_text(
        "vlitc: 1\nname: t\nversion: 0.0.1\nsources:\n  coco: {type: coco, captions: c.json, "
        "images: img, check_images: false}\ntasks:\n  cap: {kind: brief_caption, source: coco, "
        "min_words: 1}\noutputs:\n  - {format: llava, path: train.json}\nreport: false\n")
    opened = []
    real = images._header_size
    monkeypatch.setattr(images, "_header_size",
                        lambda p: opened.append(p) or real(p) if isinstance(p, str) else real(p))
    result = api.build(tmp_path / "r.yaml", out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert [Path(p).name for p in opened] == ["3.jpg"]  # the one whose bytes state no size
    source = next(s for s in result.manifest["steps"] if s["id"] == "source:coco")
    assert source["counters"]["corrupt_image"] == 1 and source["counters"]["image_size_mismatch"] == 1
    samples = json.loads((tmp_path / "out" / "train.json").read_text())
    assert sorted(s["image"] for s in samples) == ["1.jpg", "2.png", "4.gif"]


def test_a_header_size_read_from_the_first_bytes_is_the_probes(tmp_path):
    """:func:`head_size` over the first bytes the hash read is :func:`probe`'s header-only
    answer: for a JPEG whose header follows a large metadata segment (beyond the first bytes)
    it gives none, and the probe opens the file; another format gives none."""
    from vlitc.hashing import _CHUNK, sha256_file, sha256_file_head
    from vlitc.images import head_size, probe

    small = make_image(tmp_path / "small.jpg", size=(33, 21))
    png = make_image(tmp_path / "p.png", size=(7, 5))
    gif = make_image(tmp_path / "g.gif")
    big = tmp_path / "big.jpg"  # an APP15 segment of 60 KB, four times: the frame header after
    body = small.read_bytes()
    segment = b"\xff\xef" + (60_000 + 2).to_bytes(2, "big") + bytes(60_000)
    big.write_bytes(body[:2] + segment * 5 + body[2:])
    assert big.stat().st_size > _CHUNK
    for path in (small, png, gif, big):
        sha, head = sha256_file_head(path)
        assert sha == sha256_file(path) and head == path.read_bytes()[:_CHUNK]
    assert head_size(str(small), sha256_file_head(small)[1]) == probe(small, decode=False) == (33, 21)
    assert head_size(str(png), sha256_file_head(png)[1]) == (7, 5)
    assert head_size(str(gif), sha256_file_head(gif)[1]) is None
    assert head_size(str(big), sha256_file_head(big)[1]) is None and probe(big, decode=False) == (33, 21)


def test_a_signature_row_of_no_known_shape_gives_nothing(tmp_path):
    """A folder signature's table may come from anyone: a row gives a hash and a size only in
    the shapes a signature writes, for the file's own size and mtime."""
    from vlitc.images import file_row, file_row_of

    sha = "a" * 64
    assert file_row_of(file_row(10, 5, sha, (3, 2)), 10, 5) == (sha, (3, 2))
    assert file_row_of(file_row(10, 5, sha, None), 10, 5) == (sha, None)
    for row in ([10, 6, sha], [11, 5, sha, 3, 2], [10, 5, sha, 3], [10, 5, sha, True, 2],
                [10, 5, sha, 0, 2], [10, 5, sha, "3", 2], [10, 5, 7], {"a": 1}, None, "x"):
        assert file_row_of(row, 10, 5) is None


def test_an_image_opened_by_its_extensions_format_reads_as_opened_with_every_format(tmp_path):
    """probe tries the extension's format alone first: a file of another format under that
    name, a truncated one or no image at all gives what Pillow gives trying every format."""
    from PIL import Image

    from vlitc.images import compute

    def plain(rel: str) -> tuple:  # the check as Pillow's open with every format makes it
        try:
            with Image.open(tmp_path / rel) as im:
                return im.size, None
        except Exception as e:
            return None, f"corrupt: {type(e).__name__}: {e}"

    make_image(tmp_path / "real.jpg", (30, 20))
    Image.new("RGB", (7, 9)).save(tmp_path / "png.jpg", format="PNG")
    Image.new("RGB", (5, 6)).save(tmp_path / "jpeg.png", format="JPEG")
    Image.new("RGB", (4, 3)).save(tmp_path / "gif.jpeg", format="GIF")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "real.jpg").read_bytes()[:40])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.JPG").write_bytes(b"")
    for rel in ("real.jpg", "png.jpg", "jpeg.png", "gif.jpeg", "cut.jpg", "text.png", "empty.JPG"):
        info = compute((str(tmp_path), False, False, True), rel)
        size = (info.width, info.height) if info.error is None else None
        assert (size, info.error) == plain(rel), rel


def test_a_header_read_by_imagesize_gives_what_pillow_gives_and_a_bomb_goes_to_pillow(tmp_path, fixtures_dir):
    """A header-only check of a JPEG or PNG takes its size from ``imagesize``: the same size,
    or the same error, as Pillow's open for every kind of such file; a header that states more
    pixels than Pillow accepts without a warning is opened by Pillow, which refuses it."""
    import io
    import struct
    import zlib

    from PIL import Image

    from vlitc import images
    from vlitc.images import compute

    def plain(path: Path) -> tuple:
        try:
            with Image.open(path) as im:
                return im.size, None
        except Exception as e:
            return None, f"corrupt: {type(e).__name__}: {e}"

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the stored size is the size
    thumb = io.BytesIO()
    Image.new("RGB", (8, 6)).save(thumb, format="JPEG")
    files = {
        "rgb.jpg": lambda p: Image.new("RGB", (33, 21), "red").save(p, quality=90),
        "gray.jpeg": lambda p: Image.new("L", (5, 300)).save(p, format="JPEG"),
        "cmyk.jpg": lambda p: Image.new("CMYK", (40, 41)).save(p, format="JPEG"),
        "progressive.jpg": lambda p: Image.new("RGB", (64, 48)).save(p, format="JPEG", progressive=True,
                                                                   optimize=True),
        "exif.jpg": lambda p: Image.new("RGB", (70, 30)).save(p, format="JPEG", exif=exif.tobytes()),
        "rgba.png": lambda p: Image.new("RGBA", (17, 3)).save(p),
        "palette.png": lambda p: Image.new("P", (9, 90)).save(p),
        "deep.png": lambda p: Image.new("I;16", (12, 13)).save(p),
        "interlaced.png": lambda p: Image.new("RGB", (25, 26)).save(p, interlace=1),
        "one.PNG": lambda p: Image.new("1", (1, 1)).save(p, format="PNG"),
    }
    for name, make in files.items():
        make(tmp_path / name)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a header that states 30,000 x 30,000 pixels over a few bytes of data
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "cut.png").write_bytes((tmp_path / "rgba.png").read_bytes()[:20])
    (tmp_path / "zero.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)))
    (tmp_path / "jpeg-start.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 30)
    real = fixtures_dir / "optimum-graphcore/tests/fixtures/tests_samples/COCO/000000039769.png"
    header_reads = []
    read_header = images._header_size
    images._header_size = lambda p: header_reads.append(os.path.basename(p)) or read_header(p)
    try:
        for path in [*sorted(tmp_path.iterdir()), real]:
            info = compute((str(path.parent), False, False, True), path.name)
            size = (info.width, info.height) if info.error is None else None
            assert (size, info.error) == plain(path), path.name
    finally:
        images._header_size = read_header
    assert set(header_reads) >= {*files, "bomb.png", real.name}
    assert compute((str(tmp_path), False, False, True), "bomb.png").error.startswith("corrupt: DecompressionBombError")
    assert read_header(tmp_path / "bomb.png") == (30_000, 30_000)  # the header's say, not taken


@pytest.mark.parametrize("decode", [False, True])
def test_a_check_made_in_another_process_gives_the_same_infos_and_table(tmp_path, decode):
    """What a worker checks from :meth:`ImageChecker.rows` (its stat, containment, the table's
    and the folder signature's rows) is what the check here gives, and :meth:`ImageChecker.adopt`
    leaves the same table: a second check, from the rows of that table and of the signature of
    the unchanged folder, opens nothing and counts every image as remembered. A header-only
    check keeps no row of its own for an image whose signature row states its size."""
    import pickle

    from vlitc.images import check_rows
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "img"
    root.mkdir()
    names = [*_mixed_folder(root), "../outside.png"]
    files = FileState(tmp_path / "state")
    try:
        files.dir_signature(root)
        known = files.known_hashes(root)
        assert known.hashed_now(names[:3]) == [True] * 3  # signed for the first time
        here, there = DictStore(), DictStore()
        expected = ImageChecker(root, here, decode=decode, known=known).check(names)
        checker = ImageChecker(root, there, decode=decode, known=known)
        found, checked = check_rows(pickle.loads(pickle.dumps(checker.rows(names))))
        assert found == expected and found["../outside.png"].error.startswith("outside: ")
        assert checker.adopt(checked) == (0, len(names) - 2)  # all but the missing and the outside
        assert dict(there) == dict(here) and len(here) == 1
        kept = len(next(iter(dict(here).values())))
        stated = sum(1 for n in names if n.endswith(".png") and (root / n).is_file() and ".." not in n)
        assert kept == (len(names) - 2 if decode else len(names) - 2 - stated) and stated > 5
        files.dir_signature(root)  # unchanged: nothing hashed this time
        known = files.known_hashes(root)
        assert known.hashed_now(names[:3]) == [False] * 3
        again = ImageChecker(root, there, decode=decode, known=known)
        found, checked = check_rows(again.rows(names))
        assert found == expected and checked == ({}, len(names) - 2, 0)
    finally:
        files.close()
    # a worker keeps a checker (and its folder's listing) for one checker's runs, not another's
    assert again.rows(names)[0] != checker.rows(names)[0]


@pytest.mark.parametrize("decode", [False, True])
def test_a_worker_reads_the_rows_of_its_images_from_the_builds_tables(tmp_path, decode):
    """A check sent to a worker names the build's SQLite tables (the folder signature's and the
    checks'), not their rows: the build's process reads none of them, and the worker's check,
    from the tables, is the one made here; a second one, after the first is adopted, finds
    every image remembered."""
    import pickle

    from vlitc.images import check_rows
    from vlitc.rows import RowStore
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "img"
    root.mkdir()
    names = _mixed_folder(root)
    files = FileState(tmp_path / "state")
    try:
        files.dir_signature(root)
        shas = {sha for _n, (_s, _m, sha, *_wh) in files.known_hashes(root).items()}
        expected = ImageChecker(root, DictStore(), decode=decode, known=files.known_hashes(root)).check(names)
        files.dir_signature(root)
        known = files.known_hashes(root)
        checks = RowStore(tmp_path / "checks.sqlite")
        checker = ImageChecker(root, checks, decode=decode, known=known)
        spec = pickle.dumps(checker.rows(names))
        assert shas and not any(sha.encode() in spec for sha in shas)  # no row travels
        found, checked = check_rows(pickle.loads(spec))
        assert found == expected
        checker.adopt(checked)
        again = check_rows(pickle.loads(pickle.dumps(ImageChecker(root, checks, decode=decode, known=known).rows(names))))
        assert again[0] == expected and again[1][0] == {} and again[1][2] == 0
        checks.close()
    finally:
        files.close()


@pytest.mark.parametrize("decode", [True, False])
def test_a_plan_then_a_build_hashes_each_image_once(tmp_path, monkeypatch, decode):
    """``vlitc plan`` signs the images folder; the build after it finds the folder unchanged and
    its checks take the hashes the plan's signature found, instead of hashing every image again."""
    from vlitc import api, images
    from vlitc.run import fingerprint

    _coco(tmp_path)
    make_image(tmp_path / "img" / "2.jpg", color="blue")
    (tmp_path / "r.yaml").write_text(
        "vlitc: 1\nname: t\nversion: 0.0.1\nsources:\n  coco: {type: coco, captions: c.json, "
        f"images: img, check_images: {str(decode).lower()}}}\ntasks:\n  cap: {{kind: brief_caption, "
        "source: coco, min_words: 1}\noutputs:\n  - {format: llava, path: train.json}\nreport: false\n")
    hashed: list[str] = []
    for module, name in ((images, "sha256_file"), (fingerprint, "sha256_file_head")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda p, real=real: hashed.append(Path(p).name) or real(p))
    api.plan_status(tmp_path / "r.yaml", cache_dir=tmp_path / "cache")
    assert sorted(n for n in hashed if n.endswith(".jpg")) == ["1.jpg", "2.jpg", "3.jpg"]
    hashed.clear()
    result = api.build(tmp_path / "r.yaml", out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert [n for n in hashed if n.endswith(".jpg")] == []
    source = next(s for s in result.manifest["steps"] if s["id"] == "source:coco")
    # a header-only check of a JPEG whose size the plan's read of it found is that read's,
    # remembered; a check that decodes, and the file whose bytes state no size, are made here
    counted = (source["counters"]["images_hashed"], source["counters"]["images_remembered"])
    assert counted == ((3, 0) if decode else (1, 2)) and source["counters"]["corrupt_image"] == 1
    fresh = api.build(tmp_path / "r.yaml", out_dir=tmp_path / "fresh", cache_dir=tmp_path / "cache2")
    assert (tmp_path / "out" / "train.json").read_bytes() == (tmp_path / "fresh" / "train.json").read_bytes()
    assert fresh.manifest["steps"][0]["key"] == source["key"]
