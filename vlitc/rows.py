"""Per-file tables (one row per image of a folder) stored row by row, read and written in batches.

A folder of millions of images has a row per file in two tables: the sha256 its signature found
(:class:`vlitc.run.fingerprint.FileState`) and what its check found (:class:`vlitc.images.
ImageChecker`). Held whole as one JSON value, such a table costs about 500 bytes a row in memory
(2M images: 1 GB) and is read and written whole however few rows a build needs. Here each row
is an SQLite row: a batch of images reads its rows and writes the new ones, and nothing holds a
whole table.

Rows are JSON values (orjson): nothing read from a table can run code, and a value that is not
JSON reads as no row. Each reader checks the shape of what it gets (a table may come from
anyone). Names are stored as their UTF-8 bytes (a file name that is not UTF-8 as its own bytes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    import sqlite3

__all__ = ["Rows", "MemoryRows", "RowStore", "SQLiteRows"]

#: names looked up in one query (SQLite's default limit of variables is 32,766)
LOOKUP = 512
#: a run of names is read as a range of the table of at most this many rows per name (more:
#: the names are sparse in the table, and the rest are looked up by name)
SPAN = 2
_RANGE = "SELECT name, value FROM rows WHERE tab = ? AND name BETWEEN ? AND ? ORDER BY name LIMIT ?"


class Rows(Protocol):
    """A table of rows by name, read and written in batches."""

    def get_many(self, names: Sequence[str]) -> dict[str, Any]:
        """The rows of those of ``names`` the table holds."""
        ...

    def put_many(self, rows: dict[str, Any]) -> None:
        """Add or replace rows (one transaction: all of them or none)."""
        ...


class MemoryRows(dict):
    """A table held in a dict (one run's checks, tests)."""

    def get_many(self, names: Sequence[str]) -> dict[str, Any]:
        return {n: self[n] for n in names if n in self}

    def put_many(self, rows: dict[str, Any]) -> None:
        self.update(rows)


#: seconds a build waits for another on the same cache (as diskcache's stores do)
TIMEOUT = 60


def _setup(db: sqlite3.Connection) -> None:
    """A new connection's settings and tables. Switching a new file to WAL can fail at once
    with "database is locked" while another build opens it too (SQLite calls no busy handler
    for it): the statements are tried again until :data:`TIMEOUT`, as diskcache does."""
    import sqlite3
    import time

    start = time.monotonic()
    while True:
        try:
            db.execute("PRAGMA trusted_schema=OFF")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS tables (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS rows (tab INTEGER NOT NULL, name BLOB NOT NULL, "
                       "value BLOB NOT NULL, PRIMARY KEY (tab, name)) WITHOUT ROWID")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() - start > TIMEOUT:
                raise
            time.sleep(0.005)


def _name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class RowStore:
    """An SQLite file of named tables of rows (:class:`SQLiteRows`), opened on first use.

    WAL with ``synchronous=NORMAL``, like every cache store of vlitc: each write is committed
    (survives a SIGKILL of the build), not fsynced. ``trusted_schema`` is off: a database file
    from someone else cannot make a query call its functions."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._ids: dict[str, int] = {}
        #: one batch at a time on the connection (a transaction is the connection's, not a
        #: thread's)
        self.lock = threading.RLock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3  # here: a no-op build answers without importing it

            self.path.parent.mkdir(parents=True, exist_ok=True)
            # a build that writes waits for another on this cache (as diskcache's stores do)
            db = sqlite3.connect(self.path, timeout=TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                _setup(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def table(self, key: str) -> SQLiteRows:
        """The table named ``key`` (empty until rows are put in it)."""
        return SQLiteRows(self, key)

    def _id(self, key: str, create: bool) -> int | None:
        if key in self._ids:
            return self._ids[key]
        db = self._conn()
        got = db.execute("SELECT id FROM tables WHERE key = ?", (key,)).fetchone()
        if got is None:
            if not create:
                return None
            # another build on this cache may create it meanwhile: then its id is the one
            db.execute("INSERT OR IGNORE INTO tables (key) VALUES (?)", (key,))
            got = db.execute("SELECT id FROM tables WHERE key = ?", (key,)).fetchone()
        if not isinstance(got[0], int):
            import sqlite3

            raise sqlite3.DatabaseError(f"{self.path}: table {key!r} has no valid id")
        self._ids[key] = got[0]
        return got[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._ids.clear()


class SQLiteRows:
    """One table of a :class:`RowStore`."""

    def __init__(self, store: RowStore, key: str):
        self.store, self.key = store, key

    def get_many(self, names: Sequence[str]) -> dict[str, Any]:
        """The rows of those of ``names`` the table holds. The names are looked up in sorted
        runs of :data:`LOOKUP`: each run is read as one range of the table's index (the rows
        from its first name to its last, at most :data:`SPAN` times as many as it has names),
        which costs one seek where the names are dense (a folder's files, read in their order);
        the names a range did not reach are looked up one by one in an ``IN`` list."""
        out: dict[str, Any] = {}
        if not names:
            return out
        with self.store.lock:
            tab = self.store._id(self.key, create=False)
            if tab is None:
                return out
            db = self.store._conn()
            wanted = {_name(n): n for n in names}
            keys = sorted(wanted)
            for lo in range(0, len(keys), LOOKUP):
                part = keys[lo:lo + LOOKUP]
                limit = SPAN * len(part)
                seen = 0
                last = None
                for name, value in db.execute(_RANGE, (tab, part[0], part[-1], limit)):
                    seen += 1
                    last = name
                    n = wanted.get(name) if isinstance(name, bytes) else None
                    if n is not None and (row := _value(value)) is not None:
                        out[n] = row
                if seen == limit and last is not None:  # the range held more rows: the rest by name
                    rest = [k for k in part if k > last]
                    if rest:
                        sql = f"SELECT name, value FROM rows WHERE tab = ? AND name IN ({','.join('?' * len(rest))})"
                        for name, value in db.execute(sql, (tab, *rest)):
                            n = wanted.get(name) if isinstance(name, bytes) else None
                            if n is not None and (row := _value(value)) is not None:
                                out[n] = row
        return out

    def put_many(self, rows: dict[str, Any]) -> None:
        if not rows:
            return
        with self.store.lock:
            self._write("INSERT OR REPLACE INTO rows (tab, name, value) VALUES (?, ?, ?)",
                        ((n, orjson.dumps(v)) for n, v in rows.items()), create=True)

    def _write(self, sql: str, rows: Iterable[tuple], create: bool) -> None:
        """``sql`` for each ``(name, *rest)`` of ``rows``, as ``(table id, name's bytes,
        *rest)``, in one transaction."""
        tab = self.store._id(self.key, create=create)
        if tab is None:
            return
        db = self.store._conn()
        db.execute("BEGIN IMMEDIATE")  # the write lock first: a busy cache is waited for
        try:
            db.executemany(sql, ((tab, _name(name), *rest) for name, *rest in rows))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every row of the table, in no given order (read as the rows are iterated)."""
        tab = self.store._id(self.key, create=False)
        if tab is not None:
            yield from _rows(self.store._conn().execute("SELECT name, value FROM rows WHERE tab = ?", (tab,)))

    def names(self) -> Iterator[str]:
        """Every name the table holds, in no given order."""
        tab = self.store._id(self.key, create=False)
        if tab is None:
            return
        for (name,) in self.store._conn().execute("SELECT name FROM rows WHERE tab = ?", (tab,)):
            if isinstance(name, bytes):
                yield name.decode("utf-8", "surrogateescape")

    def count(self) -> int:
        tab = self.store._id(self.key, create=False)
        if tab is None:
            return 0
        return int(self.store._conn().execute("SELECT COUNT(*) FROM rows WHERE tab = ?", (tab,)).fetchone()[0])

    def delete(self, names: Iterable[str]) -> None:
        with self.store.lock:
            self._write("DELETE FROM rows WHERE tab = ? AND name = ?", ((n,) for n in names), create=False)


def _rows(cursor: Iterable[tuple[Any, Any]]) -> Iterator[tuple[str, Any]]:
    """The ``(name, value)`` rows of a query as names and parsed values, leaving out any row
    that is not a name's bytes and a JSON value (a planted or damaged row)."""
    for name, value in cursor:
        row = _value(value)
        if row is not None and isinstance(name, bytes):
            yield name.decode("utf-8", "surrogateescape"), row


def _value(value: Any) -> Any:
    """A stored row's JSON parsed; ``None`` for anything else (a planted or damaged row)."""
    if not isinstance(value, (bytes, str)):
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
