"""Paths written in a recipe or a dataset: the one rule for resolving them, and the one check
that a path stays in its folder.

Recipes, dataset files and caches come from anyone, so a path they name is untrusted: an image
``file_name: ../../evil.png``, an output ``path: /etc/cron.d/x`` or a symlink inside an image
folder that points elsewhere must not make vlitc read or write outside the folder it belongs to.
:func:`relative_problem` says why a path written in a file cannot name a place inside a folder
(lexically); :class:`Containment` resolves paths under one root, symlinks included, remembering
each folder it resolved and the root's listing (which names are symlinks), so that a million
images in one folder cost one listing and a ``realpath`` per symlink.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath


def recipe_path(recipe_dir: Path, value: str | Path) -> Path:
    """A path as a recipe writes it: ``~`` expanded; a relative one resolves against the
    recipe's folder (never the working directory)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else recipe_dir / p


def check_writable(folder: Path, what: str) -> None:
    """Make sure ``folder`` exists and takes a new file, before anything runs: a read-only or
    full disk found after every step ran is a wasted build. A located :class:`InputError`."""
    import tempfile

    from vlitc.errors import InputError, Location

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"the {what} cannot be written: {e.strerror or e}", Location(str(folder)),
                         hint=f"choose a {what} you can write to") from None


def plain_relative(part: object) -> bool:
    """A relative POSIX path that :class:`PurePosixPath` keeps as written: no empty, ``.`` or
    ``..`` segment, no leading or trailing slash."""
    return (type(part) is str and part != "" and part[0] != "/" and part[-1] not in "/."
            and "//" not in part and "./" not in part)


def relative_problem(path: object) -> str | None:
    """Why ``path`` cannot name a place inside a folder, or ``None`` when it can: it must be
    non-empty text, relative, without ``..`` segments, NUL characters or backslashes."""
    if isinstance(path, str) and plain_relative(path) and "\\" not in path and "\x00" not in path \
            and path[0] != "~":
        return None  # the usual case, without a path object
    if not isinstance(path, str) or not path:
        return "is empty or not text"
    if "\x00" in path:
        return "holds a NUL character"
    if "\\" in path:
        return "holds a backslash (write paths with '/')"
    p = PurePosixPath(path)
    if p.is_absolute() or path.startswith("~"):
        return "is an absolute path"
    if ".." in p.parts:
        return "goes up with '..'"
    if not p.parts:
        return "names the folder itself"
    return None


def folder_entries(folder: str | Path, test: Callable[[os.DirEntry], bool] | None = None) -> dict[str, bool]:
    """The names in ``folder`` (one ``scandir``), each with ``test`` of its entry (``False``
    where it fails, or without a test); empty when the folder cannot be listed. What a check
    of many files directly in one folder reads instead of a ``stat`` each."""
    out: dict[str, bool] = {}
    try:
        with os.scandir(folder) as it:
            for e in it:
                try:
                    out[e.name] = test(e) if test is not None else False
                except OSError:
                    out[e.name] = False
    except OSError:
        return {}
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Containment:
    """Resolves relative paths under ``root`` and says whether they stay there (symlinks
    followed: a link that leads out is outside)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.real_root = os.path.realpath(self.root)
        self._dirs: dict[str, bool] = {}
        self._listed: dict[str, bool] | None = None

    def listing(self) -> dict[str, bool]:
        """The names in the root folder, each with whether it is a symlink (one listing,
        read at the first call; empty when the folder cannot be listed)."""
        if self._listed is None:
            self._listed = folder_entries(self.root, os.DirEntry.is_symlink)
        return self._listed

    def problem(self, rel: str) -> str | None:
        """The problem :meth:`check` finds for ``rel``, without its ``stat``: a name that the
        root's listing holds as no symlink stays inside without a call."""
        if type(rel) is str and "/" not in rel and self.listing().get(rel) is False \
                and relative_problem(rel) is None:
            return None
        return self.check(rel)[0]

    def _dir_inside(self, rel_dir: str) -> bool:
        hit = self._dirs.get(rel_dir)
        if hit is None:
            hit = _under(os.path.realpath(os.path.join(self.root, rel_dir)), self.real_root)
            self._dirs[rel_dir] = hit
        return hit

    def check(self, rel: str) -> tuple[str | None, os.stat_result | None]:
        """``(problem, stat)`` for ``rel``: problem is ``None`` when it is inside (stat is then
        the file's, links followed, or ``None`` when it does not exist), else why it is not."""
        why = relative_problem(rel)
        if why is not None:
            return f"the image path {why}: it leads outside the image folder", None
        head = os.path.dirname(rel)
        if head and not self._dir_inside(head):
            return "a folder on the image path is a link that leads outside the image folder", None
        full = os.path.join(self.root, rel)
        try:
            st = os.lstat(full)
        except OSError:
            return None, None
        if stat.S_ISLNK(st.st_mode):
            if not _under(os.path.realpath(full), self.real_root):
                return "the image is a link that leads outside the image folder", None
            try:
                st = os.stat(full)
            except OSError:
                return None, None
        return None, st


def inside(root: Path | str, rel: str) -> bool:
    """Whether ``root/rel`` stays under ``root`` (lexically and with links resolved)."""
    return Containment(root).check(rel)[0] is None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in its folder and a rename: a reader
    sees the old bytes or the new ones, never part of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
