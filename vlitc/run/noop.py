"""The no-op rebuild, answered at make speed.

After every build the executor writes an *up-to-date record* into the cache: the recipe's
content hash, vlitc's own code (sizes and mtimes of its files), the size and mtime of every file
the build's steps read (folders: the names, sizes and mtimes under them), the step entries it
used and the release files it wrote. ``vlitc build`` checks that record before it imports the
recipe, schema, template or model layers: when the recipe bytes, every file state, every cache
entry and every release file are as recorded, the build is already done and only its manifest
is written again (every step ``cached``). Anything else, or any doubt, is a normal build.

This module imports nothing of vlitc beyond itself and the standard library.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

FORMAT = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("VLITC_CACHE_DIR") or ".vlitc")


def _record_path(cache: Path, recipe: Path) -> Path:
    name = hashlib.sha256(str(recipe.resolve()).encode()).hexdigest()[:32]
    return cache / "uptodate" / f"{name}.json"


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _files(root: Path, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, os.DirEntry, os.stat_result]]:
    """Every file under ``root`` as ``(name under root, entry, stat)``, in no set order, leaving
    out folders named in ``skip``. Symlinks are followed, except one that leads back to a
    folder it lies in (a loop: left out); a symlink that leads nowhere comes as itself (the
    stat of the link). Raises ``OSError`` when a folder cannot be read."""
    top = os.stat(root)
    stack: list[tuple[str, str, frozenset]] = [("", str(root), frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        prefix, cur, above = stack.pop()
        with os.scandir(cur) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    if e.name in skip:
                        continue
                    st = e.stat()
                    here = (st.st_dev, st.st_ino)
                    if here not in above:
                        stack.append((prefix + e.name + "/", e.path, above | {here}))
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:  # a link to nothing: the link itself
                    st = e.stat(follow_symlinks=False)
                yield prefix + e.name, e, st


def listing(root: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, str, int, int]]:
    """Every file under ``root`` (see :func:`_files`) as ``(name under root, path, size,
    mtime_ns)``, sorted by name."""
    files = [(name, e.path, st.st_size, st.st_mtime_ns) for name, e, st in _files(root, skip)]
    files.sort()
    return files


def _row(name: str, size: int, mtime: int) -> str:
    """One file's part of a folder's hash (:func:`listing_hash`, :func:`_folder`)."""
    return f"{name}\0{size}\0{mtime}\n"


#: rows of a folder's text hashed at a time (:func:`text_sha256`)
HASH_ROWS = 1 << 14


def text_sha256(rows: Iterable[str]) -> str:
    """The hex sha256 of ``"".join(rows)`` in UTF-8, fed :data:`HASH_ROWS` rows at a time: a
    large folder's text is never made whole."""
    h = hashlib.sha256()
    it = iter(rows)
    while block := list(itertools.islice(it, HASH_ROWS)):
        h.update("".join(block).encode())
    return h.hexdigest()


def listing_hash(files: list[tuple[str, str, int, int]]) -> str:
    """The hash of a :func:`listing`'s names, sizes and mtimes (no contents)."""
    return text_sha256(_row(n, s, m) for n, _, s, m in files)


def _folder(root: Path, skip: tuple[str, ...] = ()) -> str | None:
    """Names, sizes and mtimes of every file under ``root`` (no contents read), leaving out
    folders named in ``skip``: :func:`listing_hash` of its :func:`listing`, made without the
    listing's tuples and paths (a third less time for a folder of images)."""
    try:
        lines = [_row(name, st.st_size, st.st_mtime_ns) for name, _e, st in _files(root, skip)]
    except OSError:
        return None
    lines.sort()  # as listing's names sort: no name holds the NUL that ends it here
    return text_sha256(lines)


def _code() -> str | None:
    """vlitc's own files (an upgrade or an edit of the code is never a no-op)."""
    return _folder(Path(__file__).resolve().parents[1], skip=("__pycache__",))


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def write(cache: Path, recipe: Path, out_dir: Path, inputs: list[Path], entries: list[str],
          outputs: list[str], listed: dict[str, str] | None = None) -> None:
    """Record a finished build (called by the executor once the release is in place).
    ``listed``: folders the build listed already, by resolved path, with the hash of their
    files' names, sizes and mtimes as :func:`_folder` makes it (they are not listed again)."""
    files, folders = {}, {}
    listed = listed or {}
    for p in sorted(set(inputs) | {recipe.resolve()}):
        if p.is_dir():
            folders[str(p)] = listed.get(str(p)) or _folder(p)
        else:
            files[str(p)] = _stamp(p)
    out_dir = out_dir.resolve()
    record = {
        "format": FORMAT, "code": _code(), "recipe": str(recipe.resolve()), "recipe_sha256": _sha(recipe),
        "out": str(out_dir), "files": files, "folders": folders, "entries": sorted(set(entries)),
        "outputs": {rel: _stamp(out_dir / rel) for rel in outputs},
    }
    path = _record_path(cache, recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, sort_keys=True)
    os.replace(tmp, path)


def check(recipe: Path, cache: Path, out_dir: Path | None) -> dict | None:
    """The release's manifest when the build of ``recipe`` into ``out_dir`` (default: where it
    went last time) with cache ``cache`` is already done, else None."""
    try:
        record = json.loads(_record_path(cache, recipe).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    out = Path(record.get("out", ""))
    if out_dir is not None and out_dir.resolve() != out:
        return None
    if record.get("recipe") != str(recipe.resolve()) or record.get("recipe_sha256") != _sha(recipe):
        return None
    if any(_stamp(Path(p)) != stamp for p, stamp in record.get("files", {}).items()):
        return None
    if any(_folder(Path(p)) != sig for p, sig in record.get("folders", {}).items()):
        return None
    steps = cache / "steps"
    if not all((steps / f"{key}.json").is_file() for key in record.get("entries", [])):
        return None
    if any(_stamp(out / rel) != stamp for rel, stamp in record.get("outputs", {}).items()):
        return None
    if record.get("code") != _code():
        return None
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "llm" in manifest or not isinstance(manifest.get("steps"), list):
        return None  # generated releases take the full path (their usage is reported fresh)
    if out_dir is None and (Path("build") / str(manifest.get("name"))).resolve() != out:
        return None  # the default output folder is relative to where vlitc runs
    if {o.get("path") for o in manifest.get("outputs", [])} != set(record.get("outputs", {})):
        return None
    return manifest


def answer(recipe: Path, cache: Path, out_dir: Path | None) -> dict | None:
    """Check, and when the build is done write its manifest as a no-op build would (every step
    cached, no time spent in steps); returns that manifest, or None for a real build."""
    t0 = time.perf_counter()
    manifest = check(recipe, cache, out_dir)
    if manifest is None:
        return None
    for s in manifest["steps"]:
        s["status"], s["seconds"] = "cached", 0.0
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    path = Path(json.loads(_record_path(cache, recipe).read_text())["out"]) / "manifest.json"
    # a new file (its mode from the umask, like every release file), named as a release's
    # staging files are (vlitc.release.layout.STAGING_PREFIX) so that a leftover is swept
    tmp = path.with_name(f".vlitc-staging-{os.getpid()}-manifest.json")
    with open(tmp, "wb") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    os.replace(tmp, path)
    return manifest
