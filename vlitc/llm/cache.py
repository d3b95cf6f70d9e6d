"""The request store: one diskcache entry per sample, keyed by :func:`vlitc.llm.types.sample_key`.

Each response is committed (one SQLite transaction) the moment it arrives, so a build killed with
SIGKILL re-sends nothing that had completed. A release carries the responses its build used as a
JSON-lines file (``export``); a frozen rebuild reads them back (``load_store``) and calls nothing.
Entries hold texts, finish reasons, usage and model: never keys, headers or secrets. Entries are
JSON (:mod:`vlitc.diskstore`): a pickled entry, written by an older vlitc or planted, is never
loaded; it is a miss, fetched again and overwritten.

Leases make one sender per sample key across processes sharing the cache: before sending, a
session claims the keys it will send (a lease names host, process and session, and expires
``LEASE_TTL`` seconds after its last renewal); another session that finds a live lease waits for
the answer instead of sending the request again. A lease whose process is gone (``kill -9``)
is taken over at once on the same host, and after ``LEASE_TTL`` from anywhere else. Leases cost
two commits per request, so a session takes them only while another session uses the cache:
every session that sends registers in ``peers/`` (looked at every ``PEERS_EVERY`` seconds); one
that finds a newcomer leases what it has in flight and waits ``JOIN_GRACE`` before sending more,
by which time the newcomer has done the same (see :meth:`vlitc.llm.session.LLMSession._own`).
The sessions of one build's fanned-out LLM steps (:mod:`vlitc.llm.fanout`) lease from their
first request (``always_lease``) and say so when they register: a newcomer waits
``JOIN_GRACE`` only when a peer that may have unleased requests in flight is there.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from vlitc.errors import CacheError, InputError, Location
from vlitc.release import layout

STORE_FILE = layout.RESPONSES
_FIELDS = ("text", "finish_reason", "usage", "provider", "model")
LEASE_TTL = 30.0  # seconds a lease (or a peer's registration) lives without renewal
PEERS_EVERY = 0.2  # seconds between looks at which other sessions use this cache
JOIN_GRACE = 1.0  # seconds a session waits after it finds a new peer (> PEERS_EVERY, with margin)
_HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class ResponseCache:
    """Per-sample response entries on disk (diskcache), plus an optional read-only release store."""

    def __init__(self, directory: Path, store: dict[str, dict] | None = None):
        import diskcache

        from vlitc.diskstore import open_cache

        self.directory = Path(directory)
        try:
            self._dc = open_cache(self.directory)
        except (OSError, diskcache.core.Timeout) as exc:  # pragma: no cover - environment
            raise CacheError(f"cannot open the LLM response cache at {directory}: {exc}") from exc
        self._store = store or {}
        self._leases: Any = None
        self._peers: Any = None
        self._peers_at = -1e9
        self._shared = False
        self.always_lease = False  # lease every request, whether or not others use the cache
        self.solo_peers = False  # another session that leases only once it sees others is there
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lease_ttl = LEASE_TTL
        self.warnings: list[str] = []

    def get(self, key: str) -> dict | None:
        if key in self._store:
            return self._store[key]
        try:
            entry = self._dc.get(key)
        except Exception as exc:  # a corrupt entry is a miss, with a warning
            self.warnings.append(f"corrupt LLM cache entry {key[:12]}: {exc}")
            return None
        if entry is not None and not (
            isinstance(entry, dict) and isinstance(entry.get("text"), str)
            and isinstance(entry.get("usage", {}), dict)
        ):
            self.warnings.append(f"corrupt LLM cache entry {key[:12]}: unexpected shape")
            return None
        return entry

    def set(self, key: str, entry: dict) -> None:
        self._dc.set(key, {k: entry[k] for k in _FIELDS if k in entry})

    def __len__(self) -> int:
        return len(self._dc)

    def refused(self) -> int:
        """Entries that were not loaded because they are not JSON (an older layout or planted)."""
        from vlitc.diskstore import refused

        return refused(self._dc)

    # leases ---------------------------------------------------------------------------------
    def _lease_db(self) -> Any:
        if self._leases is None:
            from vlitc.diskstore import open_cache

            self._leases = open_cache(self.directory / "leases")
        return self._leases

    def _stale(self, lease: Any) -> bool:
        """A lease of a process on this host that no longer runs."""
        if not isinstance(lease, dict) or not isinstance(lease.get("pid"), int):
            return True
        return lease.get("host") == _HOST and lease["pid"] != os.getpid() and not _alive(lease["pid"])

    def shared(self, force: bool = False) -> bool:
        """Whether another live session uses this cache; registers (renews) this session too.
        Looked up at most every ``PEERS_EVERY`` seconds unless ``force``."""
        now = time.monotonic()
        if not force and now - self._peers_at < PEERS_EVERY:
            return self._shared
        self._peers_at = now
        if self._peers is None:
            from vlitc.diskstore import open_cache

            self._peers = open_cache(self.directory / "peers")
        db = self._peers
        db.set(self.owner, {"owner": self.owner, "host": _HOST, "pid": os.getpid(),
                            "leases": self.always_lease}, expire=self.lease_ttl)
        others = solo = False
        for k in list(db.iterkeys()):
            if k == self.owner:
                continue
            peer = db.get(k)  # None once expired
            if peer is not None and self._stale(peer):
                db.delete(k)
            elif peer is not None:
                others = True
                solo = solo or not peer.get("leases")
                if solo:
                    break
        self._shared, self.solo_peers = others, solo
        return others

    def claim(self, keys: list[str]) -> frozenset[str]:
        """Lease the ``keys`` nobody else holds (or whose holder died); returns those leased."""
        if not keys:
            return frozenset()
        db = self._lease_db()
        mine = {"owner": self.owner, "host": _HOST, "pid": os.getpid()}
        got = []
        with db.transact():
            for k in keys:
                cur = db.get(k)
                if cur is None or (isinstance(cur, dict) and cur.get("owner") == self.owner) or self._stale(cur):
                    db.set(k, mine, expire=self.lease_ttl)
                    got.append(k)
        return frozenset(got)

    def renew(self, keys: list[str]) -> None:
        """Extend this session's leases on ``keys`` by another ``lease_ttl``."""
        if not keys or self._leases is None:
            return
        with self._leases.transact():
            for k in keys:
                self._leases.touch(k, expire=self.lease_ttl)

    def release(self, keys: list[str]) -> None:
        """Give back this session's leases on ``keys``."""
        if not keys or self._leases is None:
            return
        with self._leases.transact():
            for k in keys:
                cur = self._leases.get(k)
                if isinstance(cur, dict) and cur.get("owner") == self.owner:
                    self._leases.delete(k)

    def close(self) -> None:
        self._dc.close()
        if self._leases is not None:
            self._leases.close()
        if self._peers is not None:
            self._peers.delete(self.owner)
            self._peers.close()

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
