"""Step keys: sha256 of canonical JSON of what determines a step's output.

Canonical JSON (:mod:`vlitc.hashing`) has sorted keys, no whitespace and no NaN; a value that
cannot be represented raises (never a random fingerprint). File contents are hashed once and remembered by
(path, size, mtime), like DVC's state database, so an unchanged file is not read again; the
mtimes only ever decide whether to read a file again, never what a key or a lock holds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.hashing import canonical, digest, sha256_file

__all__ = ["canonical", "digest", "sha256_file", "step_key", "item_digest", "FileState"]

KEY_FIELDS = ("op", "version", "params", "files", "upstream", "seed")


def step_key(components: dict) -> str:
    """The step key from its components (see :data:`KEY_FIELDS`)."""
    missing = set(KEY_FIELDS) - set(components)
    if missing:
        raise ValueError(f"step key components missing: {sorted(missing)}")
    return digest({k: components[k] for k in KEY_FIELDS})


def item_digest(sample: dict) -> str:
    """Content hash of a sample for per-item caches (stats and drop marks excluded)."""
    meta = sample.get("meta") or {}
    if "stats" in meta or "drop" in meta:
        meta = {k: v for k, v in meta.items() if k not in ("stats", "drop")}
        sample = {**sample, "meta": meta}
    return digest(sample, finite=False)


def _content(path: str, sizes: bool = False) -> tuple[str, list[int] | None]:
    """A listed file's sha256 and (``sizes``), for an image, its header's size
    (:func:`vlitc.images.read_file`: one read serves the signature and a source's header-only
    image check); of a symlink that leads nowhere, the sha256 of where it leads (so such a link
    is part of a folder's signature, and never stops a build)."""
    from vlitc.images import read_file

    try:
        return read_file(path, sizes)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        return hashlib.sha256(f"symlink to nothing: {os.readlink(path)}".encode()).hexdigest(), None


#: files at least this large are hashed on threads (hashing lets go of the GIL); smaller ones,
#: whose open and read cost more than their hash, one after another meanwhile
THREAD_MIN_BYTES = 64 << 10
#: files to read before a folder's signature spreads them over the build's engine, and the
#: files per chunk there: a small folder is read here (the workers may not have started)
MAP_MIN, MAP_CHUNK = 8192, 2048


def _contents(todo: list[tuple[str, int]], sizes: bool) -> list[tuple[str, list[int] | None]]:
    """:func:`_content` of each ``(path, size)``, in order: the large files' on a pool of
    threads (one per core, up to eight) while the small ones are read here."""
    from vlitc.images import large_on_threads

    return large_on_threads([path for path, _s in todo], [size for _p, size in todo], THREAD_MIN_BYTES,
                            lambda path: _content(path, sizes), min(8, os.cpu_count() or 1))


def contents_chunk(sizes: bool, todo: list[tuple[str, int]]) -> list[tuple[str, list[int] | None]]:
    """:func:`_contents` of one chunk of a folder's files, in a worker of the build's engine."""
    return _contents(todo, sizes)


class FileState:
    """Remembers file hashes by (path, size, mtime_ns) in a small diskcache."""

    def __init__(self, root: Path):
        from vlitc.diskstore import open_cache

        self._db = open_cache(root)
        #: the build's engine (``engine.map``) when it spreads work: a large folder's files are
        #: then read in its workers (:data:`MAP_MIN`)
        self.map: Any = None
        #: whether header sizes are read with the hashes (``dir_signature(sizes=True)``): a
        #: build's checks take them (:meth:`known_hashes`); a plan's never would
        self.read_sizes = False
        #: the per-file table of the folder signed last, (folder, {name: row}; ``None``: in the
        #: store, the folder unchanged), until a step takes it (:meth:`known_hashes`)
        self._last: tuple[str, dict | None] | None = None
        #: each folder signed, by its resolved path: the hash of its files' names, sizes and
        #: mtimes as they were listed (the no-op record's folder states, :mod:`vlitc.run.noop`)
        self.listed: dict[str, str] = {}

    def close(self) -> None:
        self._db.close()

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._db.get(key)
        if hit and tuple(hit[0]) == stamp:
            return hit[1]
        sha = sha256_file(path)
        self._db.set(key, (stamp, sha))
        return sha

    def dir_signature(self, root: Path, sizes: bool = False) -> str:
        """Hash of the names and contents of every file under ``root``: a copy of the folder
        (``cp -r``: new mtimes, same bytes) has the same signature. Contents are read only for
        files whose (size, mtime) changed, and the whole answer is remembered by the names,
        sizes and mtimes of the folder's files, so an unchanged folder is only listed (one record
        per folder, not one per file). ``sizes``: the folder's images are checked by their
        headers alone, so the size each JPEG's or PNG's header states is read with its hash
        (:meth:`known_hashes`; parsing a header costs more than hashing a small file)."""
        from vlitc.run.noop import listing, listing_hash

        try:
            files = listing(root)
        except OSError as e:
            raise InputError(f"cannot read the folder: {e.strerror or e}", Location(str(e.filename or root)),
                             hint="every file under an images folder is part of the step's key") from None
        stamp = listing_hash(files)
        where = str(Path(root).resolve())
        self.listed[where] = stamp
        hit = self._db.get(f"dir:{where}")
        if hit and hit[0] == stamp:
            self._last = (where, None)  # its table is read only if a check takes it
            return hit[1]
        # name -> [size, mtime_ns, sha256, header size or None] (an older table's rows have
        # no header size: their files are opened again if a check needs it)
        known = self._db.get(f"dir-files:{where}") or {}
        read: dict[str, tuple[str, list[int] | None]] = {}
        names, todo = [], []
        for name, path, size, mtime in files:
            rec = known.get(name)
            if isinstance(rec, list) and len(rec) in (3, 4) and rec[0] == size and rec[1] == mtime:
                read[name] = rec[2], rec[3] if len(rec) == 4 else None
            else:
                names.append(name)
                todo.append((path, size))
        read.update(zip(names, self._read(todo, sizes and self.read_sizes), strict=True))
        signature = hashlib.sha256("".join(f"{n}\0{read[n][0]}\n" for n, _, _, _ in files).encode()).hexdigest()
        table = {n: [s, m, *read[n]] for n, _, s, m in files}
        with self._db.transact():
            self._db.set(f"dir-files:{where}", table)
            self._db.set(f"dir:{where}", (stamp, signature))
        self._last = (where, table)
        return signature

    def _read(self, todo: list[tuple[str, int]], sizes: bool) -> list[tuple[str, list[int] | None]]:
        """:func:`_content` of each ``(path, size)``, in order: in chunks on the build's engine
        for a large folder, else here."""
        if self.map is None or len(todo) < MAP_MIN:
            return _contents(todo, sizes)
        chunks = [todo[i:i + MAP_CHUNK] for i in range(0, len(todo), MAP_CHUNK)]
        return [row for rows in self.map(contents_chunk, sizes, chunks) for row in rows]

    def known_hashes(self, root: Path) -> dict:
        """What :meth:`dir_signature` has just read of the files under ``root``, by name:
        ``{name: [size, mtime_ns, sha256, header size]}``, the header's ``[width, height]`` for
        an image :func:`vlitc.images.read_file` sized (``sizes``), else ``None``; for a folder
        unchanged since a signature read it (a ``vlitc plan`` before the build, a build that
        stopped), what that read found; empty when it was not the last folder signed. The table
        is handed over once: a source that checks and hashes its images takes it instead of
        hashing them again (each row is taken only for a file whose size and mtime match it)."""
        where = str(Path(root).resolve())
        if self._last is None or self._last[0] != where:
            return {}
        table, self._last = self._last[1], None
        if table is None:  # the folder was unchanged: its table as the signature that read it left it
            stored = self._db.get(f"dir-files:{where}")
            table = {name: row if len(row) == 4 else [*row, None]
                     for name, row in (stored.items() if isinstance(stored, dict) else ())
                     if isinstance(row, list) and len(row) in (3, 4)}
        return table

    def drop_known(self) -> None:
        """Let go of the table :meth:`known_hashes` would hand over (the step that signed the
        folder is cached: no check will take it)."""
        self._last = None
