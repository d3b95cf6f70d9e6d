"""The release folder: reserved names, where a build may write, file modes, and updates that
are swapped in whole (a failed update leaves the old release as it was)."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from _core_util import demo_copy

from tests._core_util import needs
from vlitc.api import build
from vlitc.cli.main import main
from vlitc.errors import InputError
from vlitc.release import layout


def _tree(root):
    """Every file under ``root`` with its bytes (the manifest included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _line_col(text: str, line_text: str, value: str) -> tuple[int, int]:
    """Line and column of ``value`` on the line that holds ``line_text``."""
    for i, line in enumerate(text.splitlines(), 1):
        if line_text in line:
            return i, line.index(value, line.index(line_text)) + 1
    raise AssertionError(line_text)


# names --------------------------------------------------------------------------------------
def test_every_file_a_build_writes_is_registered_once():
    paths = [f.path for f in layout.registered()]
    assert {"manifest.json", "README.md", "report.html", "indicators.json", "vlitc.lock",
            "llm_responses.jsonl", "pools/"} <= set(paths)
    assert layout.REPORT_FILES == ("README.md", "report.html", "indicators.json", "vlitc.lock")
    assert layout.register("README.md", "report", "the dataset card") == "README.md"
    with pytest.raises(ValueError, match="already registered"):
        layout.register("readme.md", "export:other", "a second card")


@pytest.mark.parametrize("path, clash", [
    ("manifest.json", "manifest.json"), ("./README.md", "README.md"), ("readme.MD", "README.md"),
    ("report.html", "report.html"), ("pools/brief.json", "pools/"), ("pools", "pools/"),
    ("vlitc.lock/x.json", "vlitc.lock"), ("train.json", None), ("data/README.md", None),
])
def test_collision_names_the_release_file_an_output_would_overwrite(path, clash):
    found = layout.collision(path)
    assert (found.path if found else None) == clash


@pytest.mark.parametrize("output, key", [
    ("{format: llava, path: manifest.json}", "manifest.json"),
    ("{format: sharegpt, path: report.html}", "report.html"),
    ("{format: llava, path: README.md}", "README.md"),
    ("{format: llava, path: t.json, images: copy, image_dir: pools}", "pools"),
])
def test_an_output_named_like_a_release_file_is_a_located_error(tmp_path, capsys, output, key):
    recipe = demo_copy(tmp_path)
    text = recipe.read_text().replace("{format: llava, path: validation.json, split: validation}", output)
    recipe.write_text(text)
    line, col = _line_col(text, output, key)
    code = main(["validate", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{recipe}:{line}:{col}:" in err and "would overwrite the release's" in err
    assert code == main(["build", str(recipe), "--out", str(tmp_path / "o"),
                         "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert not (tmp_path / "o").exists()


# where a build may write --------------------------------------------------------------------
def test_a_folder_of_other_files_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    recipe = demo_copy(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my project\n")
    monkeypatch.chdir(project)
    code = main(["build", str(recipe), "--out", ".", "--cache-dir", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "not a vlitc release (README.md)" in err and "hint:" in err
    assert _tree(project) == {"README.md": b"my project\n"}
    assert not (tmp_path / "c" / "steps").exists() or not any((tmp_path / "c" / "steps").iterdir())


def test_a_cache_inside_the_output_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="cache folder .* is inside the output folder"):
        layout.check_out_dir(tmp_path / "rel", tmp_path / "rel" / ".cache")


def test_out_dot_builds_into_an_empty_folder_and_rebuilds_it_in_place(tmp_path, monkeypatch):
    recipe = demo_copy(tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    build(recipe, out_dir=".", cache_dir=tmp_path / "c")
    first = _tree(here)
    assert "train.json" in first and not layout.verify(here)
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 120"))
    build(recipe, out_dir=".", cache_dir=tmp_path / "c")
    assert not layout.verify(here) and _tree(here)["train.json"] != first["train.json"]
    assert os.getcwd() == str(here) and not [p for p in os.listdir(here) if p.startswith(".")]


# modes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_release_files_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    needs("pyarrow")  # the release's data/ folder holds the Parquet shards
    recipe = demo_copy(tmp_path)
    recipe.write_text(recipe.read_text().replace("path: train.parquet", "path: data/train.parquet"))
    old = os.umask(umask)
    try:
        build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c")
    finally:
        os.umask(old)
    rel = tmp_path / "rel"
    assert stat.S_IMODE(rel.stat().st_mode) == dir_mode
    assert stat.S_IMODE((rel / "data").stat().st_mode) == dir_mode
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in rel.rglob("*") if p.is_file()}
    assert set(modes.values()) == {file_mode}, modes


# swapped in whole ---------------------------------------------------------------------------
def _fail_on(monkeypatch, nth: int):
    """Make the ``nth`` file copied into a staged release fail as a full disk would."""
    real, calls = layout.copy_verified, []

    def copy(src, dst, sha):
        calls.append(dst)
        if len(calls) == nth:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real(src, dst, sha)

    monkeypatch.setattr(layout, "copy_verified", copy)
    return calls


@pytest.mark.parametrize("in_place", [False, True])
def test_a_failed_update_leaves_the_old_release_intact(tmp_path, monkeypatch, in_place):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    before = _tree(rel)
    if in_place:
        monkeypatch.chdir(rel)
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 120"))
    calls = _fail_on(monkeypatch, 2)
    with pytest.raises(OSError, match="No space left"):
        build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert len(calls) == 2
    assert _tree(rel) == before  # no new data file under the old manifest
    assert sorted(os.listdir(tmp_path)) == ["c", "demo.yaml", "rel"]
    monkeypatch.undo()
    result = build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert not layout.verify(rel) and _tree(rel)["train.json"] != before["train.json"]
    assert result.manifest["outputs"] == layout.read_manifest(rel)["outputs"]


def test_what_an_interrupted_swap_left_is_swept_and_user_files_are_kept(tmp_path):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    (rel / "notes.txt").write_text("mine\n")
    (rel / ".git").mkdir()
    (rel / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    leftover = tmp_path / f".rel{layout.STAGING_PREFIX}x1"  # a build killed while staging
    leftover.mkdir()
    (leftover / "train.json").write_text("[]")
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 120"))
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert not leftover.exists() and sorted(os.listdir(tmp_path)) == ["c", "demo.yaml", "rel"]
    assert (rel / "notes.txt").read_text() == "mine\n"
    assert (rel / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert not layout.verify(rel)


def test_an_output_dropped_from_the_recipe_leaves_the_release(tmp_path):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert (rel / "validation.json").is_file()
    recipe.write_text(recipe.read_text().replace(
        "  - {format: llava, path: validation.json, split: validation}\n", ""))
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert not (rel / "validation.json").exists() and not layout.verify(rel)


def test_verify_names_missing_and_changed_files(tmp_path):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    (rel / "train.jsonl").unlink()
    data = bytearray((rel / "train.json").read_bytes())
    data[10] ^= 1
    (rel / "train.json").write_bytes(bytes(data))
    assert layout.verify(rel) == ["train.json: bytes differ from the manifest", "train.jsonl: missing"]
    assert layout.verify(tmp_path) == ["manifest.json: missing or not written by vlitc"]


def test_a_rebuild_that_changes_no_file_writes_only_a_new_manifest(tmp_path):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    inodes = {p.name: p.stat().st_ino for p in rel.iterdir() if p.name != "manifest.json"}
    before = _tree(rel)
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert {p.name: p.stat().st_ino for p in rel.iterdir() if p.name != "manifest.json"} == inodes
    after = _tree(rel)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}
    assert not layout.verify(rel) and sorted(os.listdir(tmp_path)) == ["c", "demo.yaml", "rel"]


def test_a_swap_killed_between_its_two_renames_gets_the_old_release_back(tmp_path):
    recipe = demo_copy(tmp_path)
    rel = tmp_path / "rel"
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    (rel / "notes.txt").write_text("mine\n")
    before = _tree(rel)
    aside = tmp_path / f".rel{layout.OLD_PREFIX}k9"  # set aside; the new one never renamed in
    rel.rename(aside)
    layout.check_out_dir(rel)
    assert layout.read_manifest(aside)
    recipe.write_text(recipe.read_text().replace("total: 200", "total: 120"))
    build(recipe, out_dir=rel, cache_dir=tmp_path / "c")
    assert (rel / "notes.txt").read_text() == "mine\n"  # carried over from the old release
    assert _tree(rel)["train.json"] != before["train.json"] and not layout.verify(rel)
    assert sorted(os.listdir(tmp_path)) == ["c", "demo.yaml", "rel"]


def test_a_no_op_rebuild_keeps_the_manifest_mode_of_the_umask(tmp_path):
    recipe = demo_copy(tmp_path)
    args = ["build", str(recipe), "--out", str(tmp_path / "rel"), "--cache-dir", str(tmp_path / "c"),
            "--quiet"]
    old = os.umask(0o002)
    try:
        assert main(args) == 0 and main(args) == 0  # the second one answered as a no-op
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "rel" / "manifest.json").stat().st_mode) == 0o664
    assert not [p for p in os.listdir(tmp_path / "rel") if p.startswith(".")]
