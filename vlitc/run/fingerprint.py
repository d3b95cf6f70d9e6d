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


def _content(path: str) -> str:
    """The sha256 of a listed file's bytes; of a symlink that leads nowhere, of where it leads
    (so such a link is part of a folder's signature, and never stops a build)."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        return hashlib.sha256(f"symlink to nothing: {os.readlink(path)}".encode()).hexdigest()


#: files at least this large are hashed on threads (hashing lets go of the GIL); smaller ones,
#: whose open and read cost more than their hash, one after another meanwhile
THREAD_MIN_BYTES = 64 << 10


def _contents(todo: list[tuple[str, str, int]]) -> dict[str, str]:
    """:func:`_content` of each ``(name, path, size)``, by name: the large files' on a pool of
    threads (one per core, up to eight) while the small ones are hashed here."""
    from vlitc.images import large_on_threads

    shas = large_on_threads([path for _n, path, _s in todo], [size for _n, _p, size in todo],
                            THREAD_MIN_BYTES, _content, min(8, os.cpu_count() or 1))
    return dict(zip((name for name, _p, _s in todo), shas, strict=True))


class FileState:
    """Remembers file hashes by (path, size, mtime_ns) in a small diskcache."""

    def __init__(self, root: Path):
        from vlitc.diskstore import open_cache

        self._db = open_cache(root)
        #: the per-file table of the folder signed last, (folder, {name: [size, mtime_ns, sha256]}),
        #: until a step takes it (:meth:`known_hashes`)
        self._last: tuple[str, dict] | None = None
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

    def dir_signature(self, root: Path) -> str:
        """Hash of the names and contents of every file under ``root``: a copy of the folder
        (``cp -r``: new mtimes, same bytes) has the same signature. Contents are read only for
        files whose (size, mtime) changed, and the whole answer is remembered by the names,
        sizes and mtimes of the folder's files, so an unchanged folder is only listed (one record
        per folder, not one per file)."""
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
            return hit[1]
        known = self._db.get(f"dir-files:{where}") or {}  # name -> [size, mtime_ns, sha256]
        shas = {}
        todo = []
        for name, path, size, mtime in files:
            rec = known.get(name)
            if rec and rec[0] == size and rec[1] == mtime:
                shas[name] = rec[2]
            else:
                todo.append((name, path, size))
        shas.update(_contents(todo))
        signature = hashlib.sha256("".join(f"{n}\0{shas[n]}\n" for n, _, _, _ in files).encode()).hexdigest()
        table = {n: [s, m, shas[n]] for n, _, s, m in files}
        with self._db.transact():
            self._db.set(f"dir-files:{where}", table)
            self._db.set(f"dir:{where}", (stamp, signature))
        self._last = (where, table)
        return signature

    def known_hashes(self, root: Path) -> dict:
        """The sha256 of the files under ``root`` that :meth:`dir_signature` has just read, by
        name: ``{name: [size, mtime_ns, sha256]}`` (empty when it read none: the folder was
        unchanged, or it was not the last folder signed). The table is handed over once: a
        source that checks and hashes its images takes it instead of hashing them again."""
        where = str(Path(root).resolve())
        if self._last is None or self._last[0] != where:
            return {}
        table, self._last = self._last[1], None
        return table

    def drop_known(self) -> None:
        """Let go of the table :meth:`known_hashes` would hand over (the step that signed the
        folder is cached: no check will take it)."""
        self._last = None
