"""Image paths from datasets stay under their source's image folder (symlinks included) unless
the recipe says otherwise, and a release never writes or names an image outside itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests._sources_util import load, make_ctx, make_image, write_json
from vlitc.api import build
from vlitc.errors import InputError
from vlitc.paths import Containment, folder_entries, relative_problem


def _coco(tmp_path: Path, file_name: str) -> None:
    make_image(tmp_path / "img" / "ok.png")
    write_json(tmp_path / "c.json", {
        "images": [{"id": 1, "file_name": "ok.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": file_name, "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A red square."},
                        {"id": 2, "image_id": 2, "caption": "An evil square."}]})


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "file_link", "folder_link"])
def test_an_image_path_leading_out_of_the_folder_is_a_located_error(tmp_path, kind):
    outside = make_image(tmp_path / "secret" / "evil.png")
    name = {"dotdot": "../secret/evil.png", "absolute": str(outside),
            "file_link": "link.png", "folder_link": "sub/evil.png"}[kind]
    _coco(tmp_path, name)
    if kind == "file_link":
        os.symlink(outside, tmp_path / "img" / "link.png")
    if kind == "folder_link":
        os.symlink(outside.parent, tmp_path / "img" / "sub")
    with pytest.raises(InputError) as info:
        load("coco", {"captions": "c.json", "images": "img"}, make_ctx(tmp_path))
    assert info.value.location.file == str(tmp_path / "c.json")
    assert f"image {name!r}" in info.value.message and "outside" in info.value.message
    assert "images_outside: true" in info.value.hint


def test_a_link_that_stays_inside_the_folder_is_fine(tmp_path):
    _coco(tmp_path, "alias.png")
    os.symlink(tmp_path / "img" / "ok.png", tmp_path / "img" / "alias.png")
    recs = load("coco", {"captions": "c.json", "images": "img"}, make_ctx(tmp_path))
    assert [r["image"]["path"] for r in recs] == ["ok.png", "alias.png"]


def test_images_outside_true_reads_them(tmp_path):
    make_image(tmp_path / "secret" / "evil.png")
    _coco(tmp_path, "../secret/evil.png")
    recs = load("coco", {"captions": "c.json", "images": "img", "images_outside": True},
                make_ctx(tmp_path))
    assert len(recs) == 2


def test_containment_checks():
    assert relative_problem("a/b.png") is None
    for bad in ("", "/etc/passwd", "../x", "a/../../x", "~/x", "a\\b", "a\x00b"):
        assert relative_problem(bad) is not None, bad
    assert Containment("/tmp").check("../etc/passwd")[0] is not None


def test_the_fast_answers_are_the_full_ones():
    """relative_problem's plain-path shortcut and Containment.problem's listing answer as the
    full checks do, links in and out of the folder included."""
    from pathlib import PurePosixPath

    for path in ("a", "a/b.png", ".hidden", "..x", "x..", "a./b", "a/.", "./a", "a//b", "a/", ".",
                 "..", "~x", "x~", "a/~b", "a\\b", "a\x00b", "/a", "a/../b", "\u00e9.jpg", "a b.jpg"):
        p = PurePosixPath(path)
        full = (None if "\x00" not in path and "\\" not in path and not p.is_absolute()
                and not path.startswith("~") and ".." not in p.parts and p.parts else "problem")
        assert (relative_problem(path) is None) == (full is None), path


def test_containment_answers_from_the_listing_as_from_lstat(tmp_path):
    root, out = tmp_path / "img", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    out.mkdir()
    make_image(root / "a.png")
    make_image(out / "b.png")
    (root / "in.png").symlink_to(root / "a.png")
    (root / "out.png").symlink_to(out / "b.png")
    (root / "broken.png").symlink_to(root / "gone.png")
    (root / "dir").symlink_to(out)
    c = Containment(root)
    names = ["a.png", "in.png", "out.png", "broken.png", "missing.png", "sub", "dir", "dir/b.png",
             "sub/x.png", "../out/b.png", "/etc/passwd", ""]
    assert [c.problem(n) for n in names] == [Containment(root).check(n)[0] for n in names]
    assert c.problem("out.png") and c.problem("dir/b.png") and c.problem("a.png") is None
    assert c.listing()["in.png"] is True and c.listing()["a.png"] is False


RECIPE = """\
vlitc: 1
name: t
sources:
  coco: {{type: coco, images: img, captions: c.json, images_outside: {outside}}}
pools:
  p: {{templates: ["Describe the image."]}}
tasks:
  cap: {{kind: template, source: coco, instruction: {{pool: p}}, response: "{{{{ caption }}}}", per: caption}}
outputs:
  - {{format: llava, path: train.json, images: copy}}
report: false
"""


def test_a_folder_listing_tests_each_entry_and_is_empty_for_no_folder(tmp_path):
    """One listing for the checks of a folder's files: the names, each with its entry's test
    (a link to nothing is no file; a test that fails answers False)."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "a.jpg", tmp_path / "link.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    names = {"a.jpg", "sub", "link.jpg", "dangling.jpg"}
    assert folder_entries(tmp_path) == dict.fromkeys(names, False)
    assert folder_entries(tmp_path, os.DirEntry.is_file) == {"a.jpg": True, "sub": False, "link.jpg": True,
                                                             "dangling.jpg": False}
    assert folder_entries(tmp_path, os.DirEntry.is_symlink) == {"a.jpg": False, "sub": False, "link.jpg": True,
                                                                "dangling.jpg": True}

    def fails(_entry: os.DirEntry) -> bool:
        raise PermissionError("no")

    assert folder_entries(tmp_path, fails) == dict.fromkeys(names, False)
    assert folder_entries(tmp_path / "none") == {} and folder_entries(tmp_path / "a.jpg") == {}


def test_copy_export_of_an_image_from_outside_stays_in_the_release(tmp_path):
    make_image(tmp_path / "secret" / "evil.png")
    _coco(tmp_path, "../secret/evil.png")
    (tmp_path / "r.yaml").write_text(RECIPE.format(outside="true"))
    out = tmp_path / "out" / "release"
    build(tmp_path / "r.yaml", out_dir=out, cache_dir=tmp_path / "cache")
    data = json.loads((out / "train.json").read_text())
    names = sorted({s["image"] for s in data}, key=lambda n: n != "ok.png")
    assert names[0] == "ok.png" and names[1].startswith("_outside/") and names[1].endswith("/evil.png")
    assert (out / "images" / names[1]).is_file()
    assert not (tmp_path / "out" / "secret").exists()
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(out in p.parents for p in written)


def test_copy_export_refuses_the_escape_by_default(tmp_path):
    make_image(tmp_path / "secret" / "evil.png")
    _coco(tmp_path, "../../evil.png")
    (tmp_path / "r.yaml").write_text(RECIPE.format(outside="false"))
    with pytest.raises(InputError):
        build(tmp_path / "r.yaml", out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil.png").exists()
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
