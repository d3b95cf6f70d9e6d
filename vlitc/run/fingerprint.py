"""Step keys: sha256 of canonical JSON of what determines a step's output.

Canonical JSON (:mod:`vlitc.hashing`) has sorted keys, no whitespace and no NaN; a value that
cannot be represented raises (never a random fingerprint). File contents are hashed once and remembered by
(path, size, mtime), like DVC's state database, so an unchanged file is not read again; the
mtimes only ever decide whether to read a file again, never what a key or a lock holds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.hashing import canonical, digest, sha256_file, sha256_file_head
from vlitc.rows import MemoryRows, Rows, RowStore, SQLiteRows

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


def _content(path: str) -> tuple[str, tuple[int, int] | None]:
    """The sha256 of a listed file's bytes (of a symlink that leads nowhere, of where it leads:
    so such a link is part of a folder's signature, and never stops a build), and the size a
    JPEG's or PNG's header states in the first bytes read (:func:`vlitc.images.head_size`): a
    source's header-only image check then opens none of the files its folder's signature
    hashed."""
    from vlitc.images import head_size

    try:
        sha, head = sha256_file_head(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        return hashlib.sha256(f"symlink to nothing: {os.readlink(path)}".encode()).hexdigest(), None
    return sha, head_size(path, head)


#: files at least this large are hashed on threads (hashing lets go of the GIL); smaller ones,
#: whose open and read cost more than their hash, one after another meanwhile
THREAD_MIN_BYTES = 64 << 10
#: files to hash before a folder's signature spreads them over the build's engine, and the
#: files per chunk there: a small folder is hashed here (the workers may not have started)
MAP_MIN, MAP_CHUNK = 8192, 2048
#: files whose rows a folder's signature reads, hashes and writes at a time
BLOCK = 1 << 16


def _contents(todo: list[tuple[str, int]]) -> list[tuple[str, tuple[int, int] | None]]:
    """:func:`_content` of each ``(path, size)``, in order: the large files' on a pool of
    threads (one per core, up to eight) while the small ones are hashed here."""
    from vlitc.images import large_on_threads

    return large_on_threads([path for path, _s in todo], [size for _p, size in todo], THREAD_MIN_BYTES,
                            _content, min(8, os.cpu_count() or 1))


def contents_chunk(_job: None, todo: list[tuple[str, int]]) -> list[tuple[str, tuple[int, int] | None]]:
    """:func:`_contents` of one chunk of a folder's files, in a worker of the build's engine."""
    return _contents(todo)


def _signed(block: Sequence[tuple[str, int, int]], shas: Sequence[str]) -> bytes:
    """The part of a folder's signature a run of its listing (``(name, size, mtime)``, in
    order) adds, given each file's sha256: ``name NUL sha256 LF`` per file."""
    return "".join(f"{name}\0{sha}\n" for (name, _s, _m), sha in zip(block, shas, strict=True)) \
        .encode("utf-8", "surrogateescape")


class HashedNames:
    """Which files of a folder the build's signature hashed itself, rather than took from its
    table: every one (a folder signed for the first time), none (an unchanged folder), or those
    whose names' 8-byte digests it holds (a sorted array: 16 MB for 2M files, not the names)."""

    def __init__(self, every: bool = False):
        self.every = every
        self._parts: list[Any] = []
        self._sorted: Any = None

    @staticmethod
    def _digests(names: Iterable[str]) -> Any:
        import numpy as np

        return np.fromiter((int.from_bytes(hashlib.blake2b(n.encode("utf-8", "surrogateescape"),
                                                           digest_size=8).digest(), "little")
                            for n in names), dtype=np.uint64)

    def add(self, names: Iterable[str]) -> None:
        if not self.every:
            self._parts.append(self._digests(names))
            self._sorted = None

    def all_or_none(self) -> bool | None:
        """True where the signature hashed every file, False where it hashed none, else None."""
        if self.every:
            return True
        return False if not any(len(p) for p in self._parts) else None

    def flags(self, names: Sequence[str]) -> list[bool]:
        """For each of ``names``, whether the signature hashed it (a digest shared by two names
        says both: these only count what was read)."""
        import numpy as np

        if self.every or not names:
            return [self.every] * len(names)
        if self._sorted is None:
            self._sorted = np.sort(np.concatenate(self._parts)) if self._parts else np.zeros(0, np.uint64)
            self._parts = [self._sorted]
        if not len(self._sorted):
            return [False] * len(names)
        d = self._digests(names)
        at = np.minimum(np.searchsorted(self._sorted, d), len(self._sorted) - 1)
        return (self._sorted[at] == d).tolist()


class SignedRows(SQLiteRows):
    """A folder's table of signature rows (:meth:`FileState.known_hashes`) with which of its
    files this build's signature hashed (:class:`HashedNames`): a check that takes a file's
    hash and header size from its row counts the file as read in this build only then."""

    def __init__(self, store: RowStore, key: str, hashed: HashedNames):
        super().__init__(store, key)
        self.hashed = hashed

    def hashed_now(self, names: Sequence[str]) -> list[bool]:
        return self.hashed.flags(names)


class FileState:
    """Remembers file hashes by (path, size, mtime_ns) in a small diskcache."""

    def __init__(self, root: Path):
        from vlitc.diskstore import open_cache

        self._db = open_cache(root)
        #: each folder's files, a row each (``dir-files:<folder>``, name -> [size, mtime_ns,
        #: sha256] and a JPEG's or PNG's header size, :func:`vlitc.images.file_row`): read and
        #: written a block of files at a time, never held whole
        self._rows = RowStore(Path(root) / "rows.sqlite")
        #: the build's engine (``engine.map``) when it spreads work: a large folder's files are
        #: then hashed in its workers (:data:`MAP_MIN`)
        self.map: Any = None
        #: the folder signed last, until a step takes its table (:meth:`known_hashes`)
        self._last: str | None = None
        #: each folder signed, by its resolved path: the hash of its files' names, sizes and
        #: mtimes as they were listed (the no-op record's folder states, :mod:`vlitc.run.noop`)
        self.listed: dict[str, str] = {}
        #: the files of the folder signed last that its signature hashed in this build
        self._hashed = HashedNames()

    def close(self) -> None:
        self._db.close()
        self._rows.close()

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
        per folder). The files' rows are read and written :data:`BLOCK` files at a time (a large
        folder signed for the first time: a chunk at a time, as its hashes come back)."""
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
            self._last = where  # its table is read only if a check takes it
            self._hashed = HashedNames()
            return hit[1]
        table = self._rows.table(f"dir-files:{where}")
        # a folder signed for the first time has no rows to look up (the rows its blocks add are
        # of other names)
        fresh = table.count() == 0
        self._hashed = hashed = HashedNames(every=fresh)
        signature = hashlib.sha256()
        if fresh and self.map is not None and len(files) >= MAP_MIN:
            self._sign_streamed(str(root), files, table, signature)
        else:
            self._sign_blocks(str(root), files, table, fresh, hashed, signature)
        if table.count() > len(files):  # files gone since: their rows go too
            present = set(files.names)
            table.delete([name for name in table.names() if name not in present])
        del files
        with self._db.transact():
            self._db.delete(f"dir-files:{where}")  # the whole-table record of an earlier layout
            self._db.set(f"dir:{where}", (stamp, signature.hexdigest()))
        self._last = where
        return signature.hexdigest()

    def _sign_blocks(self, root: str, files: Any, table: SQLiteRows, fresh: bool, hashed: HashedNames,
                     signature: Any) -> None:
        """The folder's rows read, its changed files hashed and their rows written
        :data:`BLOCK` files at a time, in the listing's order, into ``signature``."""
        from vlitc.images import file_row, file_row_of

        for lo in range(0, len(files), BLOCK):
            block = files[lo:lo + BLOCK]
            known = {} if fresh else table.get_many([name for name, _s, _m in block])
            shas: list[str] = []
            todo: list[tuple[str, int]] = []
            for name, size, mtime in block:
                got = file_row_of(known.get(name), size, mtime)
                if got is not None:
                    shas.append(got[0])
                else:
                    shas.append("")
                    todo.append((name, size))
            del known
            if todo:
                hashed.add(name for name, _s in todo)
                hashes_of = iter(self._hashes(root, todo))
                new: dict[str, list] = {}
                for i, (name, size, mtime) in enumerate(block):
                    if not shas[i]:
                        sha, header = next(hashes_of)
                        shas[i] = sha
                        new[name] = file_row(size, mtime, sha, header)
                table.put_many(new)
                del new, hashes_of
            signature.update(_signed(block, shas))

    def _sign_streamed(self, root: str, files: Any, table: SQLiteRows, signature: Any) -> None:
        """A large folder signed for the first time: every file hashed on the build's engine,
        :data:`MAP_CHUNK` files a chunk in the listing's order, and each chunk's rows written
        and its part of the signature added as its hashes come back, while the workers hash
        the chunks after it (no block waits for its last file before the next is sent)."""
        from vlitc.images import file_row

        def chunks() -> Iterator[list[tuple[str, int]]]:
            for lo in range(0, len(files), MAP_CHUNK):
                yield [(os.path.join(root, name), size) for name, size, _m in files[lo:lo + MAP_CHUNK]]

        for k, hashes in enumerate(self.map(contents_chunk, None, chunks())):
            block = files[k * MAP_CHUNK:(k + 1) * MAP_CHUNK]
            table.put_many({name: file_row(size, mtime, sha, header)
                            for (name, size, mtime), (sha, header) in zip(block, hashes, strict=True)})
            signature.update(_signed(block, [sha for sha, _h in hashes]))

    def _hashes(self, root: str, todo: list[tuple[str, int]]) -> list[tuple[str, tuple[int, int] | None]]:
        """:func:`_content` of each ``(name under root, size)``, in order: in chunks on the
        build's engine for a large folder, else here, in blocks. Each file's path is made with
        its chunk's: a large folder's paths are never all held."""
        def paths(lo: int, n: int) -> list[tuple[str, int]]:
            return [(os.path.join(root, name), size) for name, size in todo[lo:lo + n]]

        if self.map is None or len(todo) < MAP_MIN:
            block = 8 * MAP_CHUNK
            return [sha for lo in range(0, len(todo), block) for sha in _contents(paths(lo, block))]
        chunks = (paths(lo, MAP_CHUNK) for lo in range(0, len(todo), MAP_CHUNK))
        return [sha for shas in self.map(contents_chunk, None, chunks) for sha in shas]

    def known_hashes(self, root: Path) -> Rows:
        """The sha256 of the files under ``root`` that :meth:`dir_signature` has just signed,
        by name: a table of ``name -> [size, mtime_ns, sha256, ...]`` (:func:`vlitc.images.
        file_row`, :class:`vlitc.rows.Rows`);
        for a folder unchanged since a signature hashed it (a ``vlitc plan`` before the build, a
        build that stopped), what that one found; empty when it was not the last folder signed.
        The table is handed over once: a source that checks and hashes its images takes it
        instead of hashing them again (a row is taken only for a file whose size and mtime
        match it)."""
        where = str(Path(root).resolve())
        if self._last != where:
            return MemoryRows()
        self._last = None
        return SignedRows(self._rows, f"dir-files:{where}", self._hashed)

    def drop_known(self) -> None:
        """Let go of the table :meth:`known_hashes` would hand over (the step that signed the
        folder is cached: no check will take it)."""
        self._last = None
