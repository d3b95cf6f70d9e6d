"""The request store: one diskcache entry per sample, keyed by :func:`vlitc.llm.types.sample_key`.

Each response is committed (one SQLite transaction) the moment it arrives, so a build killed with
SIGKILL re-sends nothing that had completed. A release carries the responses its build used as a
JSON-lines file (``export``); a frozen rebuild reads them back (``load_store``) and calls nothing.
Entries hold texts, finish reasons, usage and model: never keys, headers or secrets.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from vlitc.errors import CacheError, InputError, Location
from vlitc.release import layout

STORE_FILE = layout.RESPONSES
_FIELDS = ("text", "finish_reason", "usage", "provider", "model")


class ResponseCache:
    """Per-sample response entries on disk (diskcache), plus an optional read-only release store."""

    def __init__(self, directory: Path, store: dict[str, dict] | None = None):
        import diskcache

        try:
            directory.mkdir(parents=True, exist_ok=True)
            # no entry ever expires or is evicted, so culling (a query per set) is switched off;
            # WAL with synchronous=NORMAL: every set is committed (survives SIGKILL), not fsynced
            self._dc = diskcache.Cache(
                str(directory),
                size_limit=2**40,
                eviction_policy="none",
                cull_limit=0,
                sqlite_journal_mode="wal",
                sqlite_synchronous=1,
            )
        except (OSError, diskcache.core.Timeout) as exc:  # pragma: no cover - environment
            raise CacheError(f"cannot open the LLM response cache at {directory}: {exc}") from exc
        self._store = store or {}
        self.warnings: list[str] = []

    def get(self, key: str) -> dict | None:
        if key in self._store:
            return self._store[key]
        try:
            entry = self._dc.get(key)
        except Exception as exc:  # a corrupt entry is a miss, with a warning
            self.warnings.append(f"corrupt LLM cache entry {key[:12]}: {exc}")
            return None
        if entry is not None and not (isinstance(entry, dict) and "text" in entry):
            self.warnings.append(f"corrupt LLM cache entry {key[:12]}: unexpected shape")
            return None
        return entry

    def set(self, key: str, entry: dict) -> None:
        self._dc.set(key, {k: entry[k] for k in _FIELDS if k in entry})

    def __len__(self) -> int:
        return len(self._dc)

    def close(self) -> None:
        self._dc.close()

    def export(self, keys: Iterable[str], path: Path) -> Path:
        """Write the entries for ``keys`` (sorted) to ``path`` (a folder or a ``.jsonl`` file)."""
        path = Path(path)
        target = path / STORE_FILE if path.suffix != ".jsonl" else path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".llm-store-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for key in sorted(set(keys)):
                    entry = self.get(key)
                    if entry is None:
                        raise CacheError(f"response {key[:12]} used by this build is not cached")
                    fh.write(orjson.dumps({"key": key, **entry}, option=orjson.OPT_SORT_KEYS))
                    fh.write(b"\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def load_store(path: Path) -> dict[str, dict]:
    """Read an exported store (folder or ``.jsonl`` file) into ``{key: entry}``."""
    path = Path(path)
    target = path / STORE_FILE if path.is_dir() else path
    if not target.is_file():
        raise InputError(
            "no exported LLM response store here",
            Location(str(target)),
            hint="a frozen rebuild needs the llm_responses.jsonl of the release",
        )
    out: dict[str, dict] = {}
    with target.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                key = row.pop("key")
                if not isinstance(row.get("text"), str):
                    raise ValueError("entry has no text")
            except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError) as exc:
                raise InputError(
                    f"bad response entry: {exc}", Location(str(target), lineno, 1)
                ) from None
            out[key] = row
    return out
