"""No-op rebuilds answered at make speed: an unchanged recipe, file states, cache and release
need no recipe, schema, template or model layer; any change is a real build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _core_util import ROOT, demo_copy

PROBE = """
import json, sys
from vlitc.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.startswith("vlitc."))}))
"""


def _build(tmp_path: Path, recipe: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-c", PROBE, "build", str(recipe), "--quiet", "--out", str(tmp_path / "out"),
           "--cache-dir", str(tmp_path / "cache"), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def _fast(run: dict) -> bool:
    return run["code"] == 0 and "vlitc.recipe" not in run["loaded"] and "vlitc.templating" not in run["loaded"]


def test_an_unchanged_rebuild_loads_no_recipe_layer_and_reports_every_step_cached(tmp_path):
    recipe = demo_copy(tmp_path, copy_annotations=True)
    first = _build(tmp_path, recipe)
    assert not _fast(first) and any(s["status"] == "ran" for s in _manifest(tmp_path)["steps"])
    files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.name != "manifest.json"}
    again = _build(tmp_path, recipe)
    assert _fast(again)
    manifest = _manifest(tmp_path)
    assert {s["status"] for s in manifest["steps"]} == {"cached"}
    assert files == {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.name != "manifest.json"}
    assert _fast(_build(tmp_path, recipe))  # and again


def test_a_changed_input_file_a_lost_entry_or_a_touched_release_file_is_a_real_build(tmp_path):
    recipe = demo_copy(tmp_path, copy_annotations=True)
    _build(tmp_path, recipe)
    caps = tmp_path / "annotations" / "captions_demo.json"
    data = json.loads(caps.read_text())
    data["annotations"][0]["caption"] = "A completely different caption for the first image."
    caps.write_text(json.dumps(data))
    run = _build(tmp_path, recipe)
    assert not _fast(run)
    assert "source:coco" in {s["id"] for s in _manifest(tmp_path)["steps"] if s["status"] == "ran"}
    assert _fast(_build(tmp_path, recipe))
    train = tmp_path / "out" / "train.json"
    good = train.read_bytes()
    train.write_bytes(good[:-10])
    assert not _fast(_build(tmp_path, recipe))
    assert train.read_bytes() == good  # the real build put the release back
    used = _manifest(tmp_path)["steps"][0]["key"]  # an entry of this build, not an older one
    (tmp_path / "cache" / "steps" / f"{used}.json").unlink()
    assert not _fast(_build(tmp_path, recipe))


def test_an_edited_recipe_and_force_are_real_builds(tmp_path):
    recipe = demo_copy(tmp_path)
    _build(tmp_path, recipe)
    assert not _fast(_build(tmp_path, recipe, "--force", "report"))
    recipe.write_text(recipe.read_text().replace("{type: min_words, min: 1}", "{type: min_words, min: 2}"))
    assert not _fast(_build(tmp_path, recipe))
    assert _fast(_build(tmp_path, recipe))


def test_vlitc_installed_elsewhere_gives_the_same_step_keys_and_lock(tmp_path):
    """The demo reads built-in instruction pools: they are shown as ``<vlitc>/...`` in step keys,
    not where vlitc lies, so vlitc laid out as a wheel in another folder builds the same keys
    and lock as this checkout."""
    import shutil

    other = tmp_path / "elsewhere"
    # as a wheel lays it out: the prompt templates inside the package, no folder beside it
    shutil.copytree(ROOT / "vlitc", other / "vlitc", ignore=shutil.ignore_patterns("__pycache__"))
    assert (other / "vlitc" / "data" / "prompt_templates" / "pools").is_dir() and not (other / "prompt_templates").exists()
    (tmp_path / "demo").mkdir()
    recipe = demo_copy(tmp_path / "demo")
    locks, keys = [], []
    for home in (ROOT, other):
        out = tmp_path / f"out-{home.name}"
        cmd = [sys.executable, "-m", "vlitc.cli.main", "build", str(recipe), "--quiet", "--out", str(out),
               "--cache-dir", str(tmp_path / f"cache-{home.name}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(home)})
        assert proc.returncode == 0, proc.stderr
        locks.append((out / "vlitc.lock").read_bytes())
        keys.append([(s["id"], s["key"]) for s in json.loads((out / "manifest.json").read_text())["steps"]])
        shown = {k for f in (tmp_path / f"cache-{home.name}" / "steps").glob("*.json")
                 for k in json.loads(f.read_text()).get("file_hashes", {})}
        assert any(k.startswith("<vlitc>/prompt_templates/pools/") for k in shown)
        assert not any(str(other) in k for k in shown)
    assert keys[0] == keys[1] and locks[0] == locks[1]


def test_a_folder_listed_for_a_step_key_is_the_folder_state_the_no_op_record_keeps(tmp_path):
    """The no-op record takes the listing the build's folder signature made (names that are
    prefixes of others, sub-folders, a symlinked folder) instead of listing the folder again."""
    from vlitc.run import noop
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "images"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("a.png", "a-b.png", "a/b/c.png", "a/x.png", "ab"):
        (root / name).write_bytes(name.encode() * 3)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "z.png").write_bytes(b"z")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    state = FileState(tmp_path / "state")
    try:
        state.dir_signature(root)
        assert state.listed == {str(root.resolve()): noop._folder(root)}
    finally:
        state.close()


def test_a_link_to_nothing_and_a_link_back_up_neither_stop_a_folder_signature(tmp_path):
    """An images folder may hold a symlink that leads nowhere (signed as the link, by where it
    points: no build stops over a file no record names) and one that leads back to a folder
    above it (a loop: not followed again); the no-op record's listing is the same."""
    import os

    from vlitc.images import ImageChecker
    from vlitc.run import noop
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"a")
    (root / "broken.jpg").symlink_to(root / "gone.jpg")
    (root / "sub" / "up").symlink_to(root)
    state = FileState(tmp_path / "state")
    try:
        first = state.dir_signature(root)
        assert state.listed[str(root.resolve())] == noop._folder(root)
        assert [n for n, *_ in noop.listing(root)] == ["broken.jpg", "sub/a.png"]
        (root / "broken.jpg").unlink()
        (root / "broken.jpg").symlink_to(root / "sub" / "gone.jpg")
        os.utime(root / "broken.jpg", ns=(1, 1), follow_symlinks=False)
        assert state.dir_signature(root) != first  # the link leads elsewhere now
    finally:
        state.close()
    infos = ImageChecker(root, decode=False, hash=True, read_size=False).check(["broken.jpg", "sub/a.png"])
    assert infos["broken.jpg"].error == "missing" and infos["sub/a.png"].ok


def test_a_folder_signature_hashes_large_files_on_threads_with_the_same_result(tmp_path, monkeypatch):
    """Large files are hashed on a pool of threads and small ones meanwhile, or a large folder's
    files in the build's worker processes; the signature and the table of hashes are the ones
    hashing each file in turn gives, a link to nothing included."""
    import hashlib
    import random

    from vlitc.run import fingerprint
    from vlitc.run.engine import Execution, make_engine
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = random.Random(0)
    for i in range(150):
        size = rng.choice((10, 70 << 10, 200 << 10))
        (root / ("sub" if i % 3 else "") / f"{i}.jpg").write_bytes(rng.randbytes(size))
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    hashed: list[str] = []
    real = fingerprint._content
    monkeypatch.setattr(fingerprint, "_content", lambda p: hashed.append(p) or real(p))
    signatures, tables = [], []
    engine = make_engine(Execution.of({}, workers=2))
    try:
        # large files on threads; every file in turn; chunks of files in two worker processes
        for least, spread in ((64 << 10, False), (1 << 40, False), (64 << 10, True)):
            monkeypatch.setattr(fingerprint, "THREAD_MIN_BYTES", least)
            monkeypatch.setattr(fingerprint, "MAP_MIN", 10 if spread else 10**9)
            monkeypatch.setattr(fingerprint, "MAP_CHUNK", 16)
            hashed.clear()
            state = FileState(tmp_path / f"state-{least}-{spread}")
            state.map = engine.map
            try:
                signatures.append(state.dir_signature(root))
                tables.append(dict(state.known_hashes(root).items()))
            finally:
                state.close()
            listed = sorted(str(p) for p in root.rglob("*") if not p.is_dir())
            assert sorted(hashed) == ([] if spread else listed)  # the workers' reads are not seen here
    finally:
        engine.close()
    assert signatures[0] == signatures[1] == signatures[2] and tables[0] == tables[1] == tables[2]
    table = tables[0]
    # a folder signed before, then changed: its changed files alone are hashed, in its workers
    # or here, and the signature is the one a first signature of the changed folder gives
    def change(folder: Path) -> None:
        (folder / "sub" / "1.jpg").write_bytes(b"other bytes")
        (folder / "new.jpg").write_bytes(b"a new file")
        (folder / "0.jpg").unlink()

    engine = make_engine(Execution.of({}, workers=2))
    again = []
    try:
        for spread in (False, True, None):  # None: a first signature of the changed folder
            folder = tmp_path / f"changed-{spread}"
            shutil.copytree(root, folder, symlinks=True)
            if spread is None:
                change(folder)
            monkeypatch.setattr(fingerprint, "MAP_MIN", 1 if spread else 10**9)
            state = FileState(tmp_path / f"state-changed-{spread}")
            state.map = engine.map
            try:
                if spread is not None:
                    state.dir_signature(folder)
                    change(folder)
                hashed.clear()
                again.append((state.dir_signature(folder), dict(state.known_hashes(folder).items())))
                if spread is False:
                    assert sorted(hashed) == [str(folder / "new.jpg"), str(folder / "sub" / "1.jpg")]
            finally:
                state.close()
    finally:
        engine.close()
    assert again[0][0] == again[1][0] == again[2][0] != signatures[0]
    shas = [{k: v[2] for k, v in t.items()} for _sig, t in again]
    assert shas[0] == shas[1] == shas[2]
    assert "0.jpg" not in shas[0] and shas[0]["new.jpg"] == hashlib.sha256(b"a new file").hexdigest()
    assert len(table) == 151
    assert table["sub/1.jpg"][2] == hashlib.sha256((root / "sub" / "1.jpg").read_bytes()).hexdigest()
    # signed again, the folder unchanged: nothing is hashed, and the stored table is handed over
    hashed.clear()
    state = FileState(tmp_path / "state-65536-False")
    try:
        assert state.dir_signature(root) == signatures[0]
        assert dict(state.known_hashes(root).items()) == table and state.known_hashes(root) == {}  # once
    finally:
        state.close()
    assert hashed == []


FORKED = """
import json, os, sys
from pathlib import Path
from vlitc.run import noop

root = Path(sys.argv[1])
forks = []
real_fork = os.fork
def fork():
    forks.append(1)
    return real_fork()
os.fork = fork
out = {}
for name, least in (("single", 10**9), ("forked", 1)):
    noop.FORK_MIN = least
    out[name] = noop._folder(root)
out["forks"] = len(forks)
# a file that is gone between the listing and its stat: no hash (a real build), in either process
noop.FORK_MIN = 1
real_stat = os.stat
def stat(path, *a, **kw):
    if str(path).endswith("b-7.png"):
        raise FileNotFoundError(path)
    return real_stat(path, *a, **kw)
os.stat = stat
out["gone"] = noop._folder(root)
print(json.dumps(out))
"""


def test_a_large_folder_stated_by_a_forked_process_has_the_hash_one_process_gives(tmp_path):
    """A large folder's files are stat'ed half here and half in a forked copy of the process
    (the no-op check runs before any thread): the folder hash is the one a single process
    gives, with sub-folders, a link to nothing, and names that hold a newline or are not
    UTF-8; a file gone before its stat gives no hash (a real build)."""
    from vlitc.run import noop

    root = tmp_path / "images"
    (root / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (root / ("a" if i % 2 else "a/b") / f"b-{i}.png").write_bytes(b"x" * i)
        (root / f"top-{i}.png").write_bytes(b"y" * (i + 1))
    (root / "new\nline.png").write_bytes(b"n")
    os.symlink(root / "nowhere.png", root / "broken.png")
    odd = os.fsencode(str(root)) + b"/\xff-odd.png"
    with open(odd, "wb") as f:
        f.write(b"odd")
    proc = subprocess.run([sys.executable, "-c", FORKED, str(root)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["forked"] == out["single"] == noop.listing_hash(noop.listing(root))
    assert out["forks"] == (1 if sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1 else 0)
    assert out["gone"] is None


def test_an_image_folder_holding_a_name_that_is_not_utf8_builds_and_rebuilds_as_a_no_op(tmp_path):
    """A stray file whose name is not UTF-8 in an images folder is part of the folder's state
    like any other (it used to stop the build with a UnicodeEncodeError)."""
    import shutil

    from _core_util import DEMO_DATA

    shutil.copytree(DEMO_DATA / "images", tmp_path / "images")
    with open(os.fsencode(str(tmp_path / "images")) + b"/\xfe-stray.jpg", "wb") as f:
        f.write(b"not an image")
    recipe = demo_copy(tmp_path)
    recipe.write_text(recipe.read_text().replace(str(DEMO_DATA / "images"), str(tmp_path / "images")))
    assert str(tmp_path / "images") in recipe.read_text()
    first = _build(tmp_path, recipe)
    assert not _fast(first)
    assert _fast(_build(tmp_path, recipe))


def test_a_folders_listing_is_its_files_sorted_by_name_as_columns(tmp_path):
    """:func:`listing` gives each file under the folder as ``(name, size, mtime_ns)``, sorted by
    name as the tuples sort (nested names, names past ASCII), by index, slice and iteration."""
    from vlitc.run.noop import listing

    names = ["b.jpg", "a.jpg", "sub/c.png", "é.png", "Z.png", "sub/deeper/d", "a0.jpg"]
    for k, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * k)
    want = sorted((n, (tmp_path / n).stat().st_size, (tmp_path / n).stat().st_mtime_ns) for n in names)
    got = listing(tmp_path)
    assert len(got) == len(want) and list(got) == want
    assert got[2:5] == want[2:5] and got[0] == want[0] and got[-1] == want[-1]
    assert listing(tmp_path / "sub" / "deeper")[:] == [("d", 5, (tmp_path / "sub/deeper/d").stat().st_mtime_ns)]
