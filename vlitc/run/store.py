"""The cache directory: content-addressed shards, step entries, state records, item caches.

    <cache>/objects/ab/abcdef...   shard and file contents, named by sha256
    <cache>/steps/<key>.json       a step's outputs (shard lists), counters and notes
    <cache>/state/<recipe>/<step>.json   the components of the last key built for a step,
                                   so `vlitc plan` can say why a step is stale
    <cache>/items/<namespace>/     diskcache stores for per-item results (stats, embeddings)
    <cache>/files/                 file hashes by (path, size, mtime)
    <cache>/tmp/                   temp files of a build in progress (``vlitc cache gc``
                                   removes those no running build holds)
    <cache>/.lock                  held shared by every open store, exclusively by gc

Every write goes to a temp file and is renamed into place; a corrupt entry is a warning and a miss.
Objects are checked against their sha256 whenever they are read (a shard as it streams, a file
as it is copied into a release): a bad one raises :class:`CorruptObject`, and the executor
removes it and reruns the step that produced it. An object written again always replaces the
one on disk, so a damaged object is repaired by the next step that produces it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from vlitc.errors import CacheError
from vlitc.paths import atomic_write

SHARD_SIZE = 20_000


class CorruptObject(CacheError):
    """A cached object is missing or its bytes do not match the sha256 it is stored under."""

    def __init__(self, sha: str, path: Path):
        self.sha, self.path = sha, path
        super().__init__(f"cache object {sha[:12]} is corrupt (its bytes do not match its hash)")

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised in the build
        return (CorruptObject, (self.sha, self.path))


def entry_objects(entry: dict) -> set[str]:
    """The sha256 of every object a step entry refers to (its shards and its files)."""
    out = {s["sha256"] for o in entry["outputs"].values() for s in o["shards"]}
    return out | {f["sha256"] for f in entry.get("files", [])}


class ShardWriter:
    """Writes records as JSON lines into content-addressed shards of ``shard_size`` records."""

    def __init__(self, store: Store, shard_size: int = SHARD_SIZE):
        self.store = store
        self.shard_size = shard_size
        self.shards: list[dict] = []
        self.count = 0
        self._f: Any = None
        self._h: Any = None
        self._n = 0
        self._tmp = ""

    def _open(self) -> None:
        fd, self._tmp = tempfile.mkstemp(dir=self.store.tmp, prefix="shard-")
        self._f = os.fdopen(fd, "wb")
        self._h = hashlib.sha256()
        self._n = 0

    def _close_shard(self) -> None:
        if self._f is None:
            return
        self._f.close()
        sha = self._h.hexdigest()
        size = os.path.getsize(self._tmp)
        self.store.adopt(Path(self._tmp), sha)
        self.shards.append({"sha256": sha, "count": self._n, "size": size})
        self._f = None

    def write(self, record: dict) -> None:
        if self._f is None:
            self._open()
        line = orjson.dumps(record) + b"\n"
        self._f.write(line)
        self._h.update(line)
        self._n += 1
        self.count += 1
        if self._n >= self.shard_size:
            self._close_shard()

    def write_all(self, records: Iterable[dict]) -> None:
        for r in records:
            self.write(r)

    def write_encoded(self, data: bytes, n: int) -> None:
        """Append ``n`` records already encoded as :meth:`write` encodes them (JSON lines): the
        same shards as writing them one by one, without decoding them."""
        while n:
            if self._f is None:
                self._open()
            room = self.shard_size - self._n
            if n <= room:
                part, data, k = data, b"", n
            else:  # the shard fills up inside this block: cut after ``room`` lines
                cut = -1
                for _ in range(room):
                    cut = data.index(b"\n", cut + 1)
                part, data, k = data[:cut + 1], data[cut + 1:], room
            self._f.write(part)
            self._h.update(part)
            self._n += k
            self.count += k
            n -= k
            if self._n >= self.shard_size:
                self._close_shard()

    def close(self) -> dict:
        self._close_shard()
        return {"shards": self.shards, "count": self.count,
                "hash": hashlib.sha256(",".join(s["sha256"] for s in self.shards).encode()).hexdigest()}

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._f = None


LOCK_FILE = ".lock"


def hold(root: Path, exclusive: bool = False) -> Any:
    """Lock the cache folder: shared while a store is open, exclusive for gc (``None`` where the
    system has no ``flock``, or, exclusive, when a store is open: the caller must not go on)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fh = open(Path(root) / LOCK_FILE, "a+b")  # noqa: SIM115 (held until release)
    try:
        fcntl.flock(fh, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
    except OSError:
        fh.close()
        return None
    return fh


class Store:
    """A cache directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            for sub in ("objects", "steps", "state", "items", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._held = hold(self.root)
        except OSError as e:
            raise CacheError(f"cannot use cache directory {self.root}: {e}") from None
        self.tmp = self.root / "tmp"
        self._items: dict[str, Any] = {}
        self.warnings: list[str] = []

    # objects
    def object_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / sha

    def adopt(self, tmp: Path, sha: str) -> None:
        """Move a finished temp file into the object store under its hash. It replaces what is
        there: the new bytes were just hashed, the old ones may have been damaged since."""
        dest = self.object_path(sha)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def discard(self, sha: str) -> None:
        """Remove a (corrupt) object, so that nothing reads it again before it is rebuilt."""
        self.object_path(sha).unlink(missing_ok=True)

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a file into the object store; returns (sha256, size)."""
        from vlitc.hashing import sha256_file

        sha = sha256_file(path)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="file-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.adopt(Path(tmp), sha)
        return sha, path.stat().st_size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Put bytes into the object store; returns (sha256, size)."""
        sha = hashlib.sha256(data).hexdigest()
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="file-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.adopt(Path(tmp), sha)
        return sha, len(data)

    def writer(self) -> ShardWriter:
        return ShardWriter(self)

    def read(self, output: dict) -> Iterator[dict]:
        """The records of a step output, shard by shard; each shard is checked against its
        sha256 before any of its records is given out (:class:`CorruptObject` otherwise)."""
        for shard in output["shards"]:
            yield from self._read_shard(shard["sha256"])

    def _read_shard(self, sha: str) -> Iterator[dict]:
        path = self.object_path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptObject(sha, path) from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise CorruptObject(sha, path)
        for line in data.splitlines():
            yield orjson.loads(line)

    def read_lines(self, output: dict) -> Iterator[bytes]:
        """The output's records as their JSON lines, not decoded."""
        for shard in output["shards"]:
            with open(self.object_path(shard["sha256"]), "rb") as f:
                yield from f

    def read_chunks(self, output: dict, size: int) -> Iterator[tuple[bytes, int]]:
        """The output's records as blocks of up to ``size`` JSON lines, not decoded."""
        buf: list[bytes] = []
        for shard in output["shards"]:
            with open(self.object_path(shard["sha256"]), "rb") as f:
                for line in f:
                    buf.append(line)
                    if len(buf) == size:
                        yield b"".join(buf), size
                        buf = []
        if buf:
            yield b"".join(buf), len(buf)

    # step entries
    def _entry_path(self, key: str) -> Path:
        return self.root / "steps" / f"{key}.json"

    def get_entry(self, key: str) -> dict | None:
        path = self._entry_path(key)
        if not path.exists():
            return None
        try:
            entry = orjson.loads(path.read_bytes())
            for out in entry["outputs"].values():
                for shard in out["shards"]:
                    if self.object_path(shard["sha256"]).stat().st_size != shard["size"]:
                        raise ValueError(f"shard {shard['sha256'][:12]} has the wrong size")
            for f in entry.get("files", []):
                if self.object_path(f["sha256"]).stat().st_size != f["size"]:
                    raise ValueError(f"file {f['path']} has the wrong size")
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            self.warnings.append(f"cache entry {key[:12]} is corrupt ({e}); it will be rebuilt")
            return None
        return entry

    def drop_entry(self, key: str) -> None:
        """Forget a step entry (its step runs again the next time it is needed)."""
        self._entry_path(key).unlink(missing_ok=True)

    def put_entry(self, key: str, entry: dict) -> None:
        atomic_write(self._entry_path(key), orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))

    # state records (for staleness reasons)
    def _state_path(self, recipe: str, step: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in step)
        return self.root / "state" / recipe / f"{safe}.json"

    def get_state(self, recipe: str, step: str) -> dict | None:
        try:
            return orjson.loads(self._state_path(recipe, step).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def put_state(self, recipe: str, step: str, record: dict) -> None:
        atomic_write(self._state_path(recipe, step), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    # per-item caches
    def item_cache(self, namespace: str) -> Any:
        """The per-item store ``namespace``: JSON values only (:mod:`vlitc.diskstore`)."""
        from vlitc.diskstore import open_cache

        if namespace not in self._items:
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in namespace)
            self._items[namespace] = open_cache(self.root / "items" / safe)
        return self._items[namespace]

    def close(self) -> None:
        for c in self._items.values():
            c.close()
        self._items.clear()
        if self._held is not None:
            self._held.close()
            self._held = None
