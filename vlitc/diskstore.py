"""Every diskcache store vlitc opens (LLM responses, per-item caches, file hashes) holds JSON.

diskcache's default :class:`diskcache.Disk` pickles any value that is not a plain string, number
or bytes, and unpickles whatever a row says is a pickle: a cache copied from someone else could
run code on the next build. :class:`JSONDisk` writes bytes as they are and every other value as
JSON text (orjson), and reads back nothing else: a pickled row (one written by an older vlitc,
or planted) is a miss, counted in :attr:`JSONDisk.refused`, and is replaced by the next write.
Value files must lie inside the store's folder. Keys are strings or bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import diskcache
import orjson
from diskcache.core import MODE_BINARY, MODE_RAW, MODE_TEXT, UNKNOWN

#: settings of every store: no entry ever expires or is evicted, so culling (a query per set)
#: is off; WAL with synchronous=NORMAL: every set is committed (survives SIGKILL), not fsynced
SETTINGS: dict[str, Any] = {
    "size_limit": 2**40,
    "eviction_policy": "none",
    "cull_limit": 0,
    "sqlite_journal_mode": "wal",
    "sqlite_synchronous": 1,
}


class JSONDisk(diskcache.Disk):
    """Serialise values as JSON (bytes stay bytes); never pickle, never unpickle."""

    def __init__(self, directory: str, **kwargs: Any):
        super().__init__(directory, **kwargs)
        self._root = os.path.realpath(directory)
        self.refused = 0  # rows that were not ours to read (pickles, stray files)

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) not in (str, bytes):
            raise TypeError(f"cache keys are strings or bytes, not {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("a cache row with a pickled key: refused")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        if not read and type(value) is not bytes:
            try:
                data = orjson.dumps(value)
            except TypeError:  # e.g. a lone surrogate in a string: JSON escapes it
                data = json.dumps(value, ensure_ascii=True).encode()
            if len(data) < self.min_file_size:
                return super().store(data.decode(), read, key=key)
            # a large value's file: the UTF-8 text diskcache writes for the str, written from
            # the encoded bytes (diskcache would copy the str into a buffer of 4 bytes a char)
            filename, full_path = self.filename(key, value)
            self._write(full_path, iter((data,)), "xb")
            return len(data), MODE_TEXT, filename, None
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_BINARY, MODE_TEXT) or (
            filename and not self._inside(os.path.join(self._directory, filename))
        ):
            self.refused += 1
            return None
        if mode == MODE_TEXT and filename and not read:  # a large value: parsed from its bytes
            with open(os.path.join(self._directory, filename), "rb") as f:  # gone: a miss
                return self._parsed(f.read())
        data = super().fetch(mode, filename, value, read)
        if read or isinstance(data, bytes):
            return data
        if not isinstance(data, str):  # a bare number: never written by vlitc
            self.refused += 1
            return None
        return self._parsed(data)

    def _parsed(self, data: str | bytes) -> Any:
        """A stored value's JSON text parsed (``None``, counted as refused, when it is not JSON)."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            try:
                return json.loads(data)
            except ValueError:
                self.refused += 1
                return None

    def remove(self, file_path: str) -> None:
        if self._inside(file_path):  # a planted row cannot make us delete files elsewhere
            super().remove(file_path)

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real.startswith(self._root + os.sep)


def open_cache(directory: Path, **settings: Any) -> diskcache.Cache:
    """A diskcache store at ``directory`` with :class:`JSONDisk` and :data:`SETTINGS`."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(directory), disk=JSONDisk, **{**SETTINGS, **settings})


def refused(cache: diskcache.Cache) -> int:
    """How many rows of ``cache`` were refused so far (0 for a store of another kind)."""
    return int(getattr(getattr(cache, "disk", None), "refused", 0))
