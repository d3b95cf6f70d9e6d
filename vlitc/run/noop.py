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
import signal
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

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


def _folders(root: Path, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, str, list[str]]]:
    """Every folder under ``root`` (``root`` too) as ``(its name under root with a trailing
    slash, its path, the names of what in it is not a folder)``, leaving out folders named in
    ``skip``. Symlinks are followed, except one that leads back to a folder it lies in (a loop:
    left out). Raises ``OSError`` when a folder cannot be read."""
    top = os.stat(root)
    stack: list[tuple[str, str, frozenset]] = [("", str(root), frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        prefix, cur, above = stack.pop()
        names = []
        with os.scandir(cur) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):  # the entry's type: a stat only for a link
                    if e.name in skip:
                        continue
                    st = e.stat()
                    here = (st.st_dev, st.st_ino)
                    if here not in above:
                        stack.append((prefix + e.name + "/", e.path, above | {here}))
                    continue
                names.append(e.name)
        yield prefix, cur, names


def _stats(cur: str, names: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """``(name, stat)`` of each name in folder ``cur``; a symlink that leads nowhere as itself
    (the stat of the link). Each is stat'ed by name in the folder's descriptor where the
    platform can: a tenth less time than by a path walked from the root."""
    fd = os.open(cur, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if _STAT_FD else None
    stat = os.stat
    try:
        for name in names:
            where = name if fd is not None else os.path.join(cur, name)
            try:
                st = stat(where, dir_fd=fd)
            except FileNotFoundError:  # a link to nothing: the link itself
                st = stat(where, dir_fd=fd, follow_symlinks=False)
            yield name, st
    finally:
        if fd is not None:
            os.close(fd)


#: whether ``os.stat`` takes a folder's descriptor (Linux, macOS; not Windows)
_STAT_FD = os.stat in os.supports_dir_fd and os.stat in os.supports_follow_symlinks


def _files(root: Path, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, str, str, os.stat_result]]:
    """Every file under ``root`` (see :func:`_folders`) as ``(name under root, its folder, its
    name, stat)``, in no set order. Raises ``OSError`` when a folder or a file cannot be read."""
    for prefix, cur, names in _folders(root, skip):
        for name, st in _stats(cur, names):
            yield prefix + name, cur, name, st


class Listing(Sequence):
    """A folder's files sorted by name, each ``(name under root, size, mtime_ns)`` (its path is
    ``os.path.join(root, name)``: a folder of millions of images holds no second string per
    file): the names in a list, the sizes and mtimes in machine integers, not a tuple and two
    int objects per file (a 2M-file folder's listing: 172 MiB held, not 338)."""

    def __init__(self, names: list[str], sizes: array, mtimes: array):
        self.names, self._sizes, self._mtimes = names, sizes, mtimes

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> tuple[str, int, int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, int, int]]: ...

    def __getitem__(self, i: int | slice) -> tuple[str, int, int] | list[tuple[str, int, int]]:
        if isinstance(i, slice):
            return list(zip(self.names[i], self._sizes[i], self._mtimes[i], strict=True))
        return self.names[i], self._sizes[i], self._mtimes[i]

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        return zip(self.names, self._sizes, self._mtimes, strict=True)


def listing(root: Path, skip: tuple[str, ...] = ()) -> Listing:
    """Every file under ``root`` (see :func:`_files`) as ``(name under root, size, mtime_ns)``,
    sorted by name (:class:`Listing`)."""
    names: list[str] = []
    sizes, mtimes = array("q"), array("q")
    for name, _cur, _base, st in _files(root, skip):
        names.append(name)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    order = sorted(range(len(names)), key=names.__getitem__)  # the names are distinct
    return Listing([names[k] for k in order], array("q", (sizes[k] for k in order)),
                   array("q", (mtimes[k] for k in order)))


def _row(name: str, size: int, mtime: int) -> str:
    """One file's part of a folder's hash (:func:`listing_hash`, :func:`_folder`)."""
    return f"{name}\0{size}\0{mtime}\n"


#: rows of a folder's text hashed at a time (:func:`text_sha256`)
HASH_ROWS = 1 << 14


def text_sha256(rows: Iterable[str]) -> str:
    """The hex sha256 of ``"".join(rows)`` in UTF-8, fed :data:`HASH_ROWS` rows at a time: a
    large folder's text is never made whole. A file name that is not UTF-8 (held as Python holds
    it, with surrogates) goes in as its bytes."""
    h = hashlib.sha256()
    it = iter(rows)
    while block := list(itertools.islice(it, HASH_ROWS)):
        h.update("".join(block).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def listing_hash(files: Iterable[tuple[str, int, int]]) -> str:
    """The hash of a :func:`listing`'s names, sizes and mtimes (no contents)."""
    return text_sha256(_row(n, s, m) for n, s, m in files)


def _folder(root: Path, skip: tuple[str, ...] = ()) -> str | None:
    """Names, sizes and mtimes of every file under ``root`` (no contents read), leaving out
    folders named in ``skip``: :func:`listing_hash` of its :func:`listing`, made without the
    listing's tuples and paths (a third less time for a folder of images), or ``None`` when it
    cannot be read. A large folder is stat'ed by two processes (:func:`_forked_rows`)."""
    try:
        folders = list(_folders(root, skip))
        forked = _forked_rows(folders) if sum(len(n) for _p, _c, n in folders) >= FORK_MIN else None
        if forked is None:
            lines = _rows(folders, 0, 1)
        else:
            child, lines = forked
            lines.extend(child())
    except OSError:
        return None
    lines.sort()  # as listing's names sort: no name holds the NUL that ends it here
    return text_sha256(lines)


def _rows(folders: list[tuple[str, str, list[str]]], part: int, parts: int) -> list[str]:
    """The folder-hash rows (:func:`_row`, written out: a call per file costs a tenth of the
    time) of part ``part`` of ``parts`` of each folder's files."""
    rows: list[str] = []
    add = rows.append
    for prefix, cur, names in folders:
        n = len(names)
        for name, st in _stats(cur, names[n * part // parts:n * (part + 1) // parts]):
            add(f"{prefix}{name}\0{st.st_size}\0{st.st_mtime_ns}\n")
    return rows


#: a folder of at least this many files is stat'ed by two processes (:func:`_forked_rows`)
FORK_MIN = 8192


def _forked_rows(folders: list[tuple[str, str, list[str]]]) -> tuple[Callable[[], list[str]], list[str]] | None:
    """The files' stats shared with a forked copy of this process, on a machine with a second
    core: a stat holds the GIL between its system calls, so threads do not overlap them, and a
    no-op build of a folder of images is mostly stats. Returns a call that gives the child's
    rows (the second half of each folder's), and this process's own rows; ``None`` where this
    process cannot fork safely (not Linux, one core, a thread running besides this one)."""
    import threading

    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2 or threading.active_count() > 1:
        return None
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: its rows down the pipe, then out without running any exit handler
        code = 1
        try:
            os.close(r)
            data = "\0\0".join(_rows(folders, 1, 2)).encode("utf-8", "surrogateescape")
            with open(w, "wb", closefd=True) as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    waited = False

    def reap() -> None:  # a child not yet waited for is stopped, then waited for
        nonlocal waited
        if not waited:
            waited = True
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def child() -> list[str]:
        nonlocal waited
        try:
            with open(r, "rb", closefd=True) as f:
                data = f.read()
            status = os.waitpid(pid, 0)[1]
            waited = True
        finally:
            reap()
        if os.waitstatus_to_exitcode(status) != 0:  # it failed (a file gone since the listing)
            return _rows(folders, 1, 2)
        # the rows are joined by two NULs: a row holds two, apart (a name holds none)
        return data.decode("utf-8", "surrogateescape").split("\0\0") if data else []

    try:
        mine = _rows(folders, 0, 2)
    except BaseException:
        os.close(r)
        reap()
        raise
    return child, mine


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
    import tempfile  # here: a no-op answer writes no record

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
