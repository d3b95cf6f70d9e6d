"""The cache directory: content-addressed shards, step entries, state records, item caches.

    <cache>/objects/ab/abcdef...   shard and file contents, named by sha256
    <cache>/steps/<key>.json       a step's outputs (shard lists), counters and notes
    <cache>/state/<recipe>/<step>.json   the components of the last key built for a step,
                                   so `vlitc plan` can say why a step is stale
    <cache>/items/<namespace>/     diskcache stores for per-item results (stats, embeddings)
    <cache>/files/                 file hashes by (path, size, mtime)

Every write goes to a temp file and is renamed into place; a corrupt entry is a warning and a miss.
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

SHARD_SIZE = 20_000


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    def close(self) -> dict:
        self._close_shard()
        return {"shards": self.shards, "count": self.count,
                "hash": hashlib.sha256(",".join(s["sha256"] for s in self.shards).encode()).hexdigest()}

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._f = None


class Store:
    """A cache directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            for sub in ("objects", "steps", "state", "items", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot use cache directory {self.root}: {e}") from None
        self.tmp = self.root / "tmp"
        self._items: dict[str, Any] = {}
        self.warnings: list[str] = []

    # objects
    def object_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / sha

    def adopt(self, tmp: Path, sha: str) -> None:
        """Move a finished temp file into the object store under its hash."""
        dest = self.object_path(sha)
        if dest.exists():
            tmp.unlink(missing_ok=True)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a file into the object store; returns (sha256, size)."""
        from vlitc.run.fingerprint import sha256_file

        sha = sha256_file(path)
        dest = self.object_path(sha)
        if not dest.exists():
            fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="file-")
            os.close(fd)
            shutil.copyfile(path, tmp)
            self.adopt(Path(tmp), sha)
        return sha, path.stat().st_size

    def writer(self) -> ShardWriter:
        return ShardWriter(self)

    def read(self, output: dict) -> Iterator[dict]:
        for shard in output["shards"]:
            with open(self.object_path(shard["sha256"]), "rb") as f:
                for line in f:
                    yield orjson.loads(line)

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
        import diskcache

        if namespace not in self._items:
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in namespace)
            self._items[namespace] = diskcache.Cache(str(self.root / "items" / safe),
                                                     eviction_policy="none", size_limit=2**40)
        return self._items[namespace]

    def close(self) -> None:
        for c in self._items.values():
            c.close()
        self._items.clear()
