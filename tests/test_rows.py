"""Per-file tables stored a row each (:mod:`vlitc.rows`), and the folder signature's rows."""

from __future__ import annotations

import os
import sqlite3

import pytest

from vlitc.rows import LOOKUP, SPAN, MemoryRows, RowStore


def test_rows_are_read_and_written_in_batches_across_lookups(tmp_path):
    store = RowStore(tmp_path / "r.sqlite")
    table = store.table("images:a")
    assert table.get_many(["x"]) == {} and table.count() == 0  # no table yet: nothing created
    rows = {f"{i:06d}.jpg": [i, i * 10, f"{i:064x}"] for i in range(2 * LOOKUP + 7)}
    table.put_many(rows)
    names = [*rows, "absent.jpg"]
    assert table.get_many(names) == rows
    assert table.get_many(names[LOOKUP - 1:LOOKUP + 1]) == {n: rows[n] for n in names[LOOKUP - 1:LOOKUP + 1]}
    table.put_many({"000001.jpg": [1, 11, "new"]})  # replaced, not added
    assert table.count() == len(rows) and table.get_many(["000001.jpg"])["000001.jpg"] == [1, 11, "new"]
    other = store.table("images:b")
    assert other.get_many(names) == {}  # tables are apart
    store.close()
    again = RowStore(tmp_path / "r.sqlite").table("images:a")  # reopened from the file
    assert dict(again.items()) == {**rows, "000001.jpg": [1, 11, "new"]}
    again.delete(["000002.jpg", "absent.jpg"])
    assert "000002.jpg" not in dict(again.items()) and again.count() == len(rows) - 1
    again.store.close()


def test_names_are_read_as_ranges_where_dense_and_by_name_where_sparse(tmp_path, monkeypatch):
    """A run of names is read as one range of the table when its rows lie together (a folder's
    files in their order), and the names past what a range may read (more rows between them
    than :data:`SPAN` a name) by name: the same rows either way, in any order asked."""
    import random

    store = RowStore(tmp_path / "r.sqlite")
    table = store.table("t")
    rows = {f"{i:06d}.jpg": [i] for i in range(6 * LOOKUP)}
    table.put_many(rows)
    queries: list[str] = []
    db = store._conn()
    monkeypatch.setattr(store, "_conn", lambda: _Traced(db, queries))
    dense = list(rows)[LOOKUP:3 * LOOKUP]
    random.Random(0).shuffle(dense)
    assert table.get_many(dense) == {n: rows[n] for n in dense}
    assert len(queries) == 2 and all("BETWEEN" in q for q in queries)  # one range a run
    queries.clear()
    sparse = [*list(rows)[::5][:LOOKUP], "absent.jpg", "zzz.jpg"]  # 5 rows a name: past the span
    assert SPAN < 5
    assert table.get_many(sparse) == {n: rows[n] for n in sparse if n in rows}
    assert any(" IN (" in q for q in queries)
    assert table.get_many([]) == {} and table.get_many(["absent.jpg"]) == {}
    store.close()


class _Traced:
    """A connection that notes the statements it runs."""

    def __init__(self, db: sqlite3.Connection, queries: list[str]):
        self.db, self.queries = db, queries

    def execute(self, sql: str, *args):
        self.queries.append(sql)
        return self.db.execute(sql, *args)


def test_a_name_that_is_not_utf8_is_stored_as_its_bytes(tmp_path):
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    table = RowStore(tmp_path / "r.sqlite").table("t")
    table.put_many({name: [1, 2, "s"], "café.png": [3, 4, "t"]})
    assert table.get_many([name, "café.png"]) == {name: [1, 2, "s"], "café.png": [3, 4, "t"]}
    assert sorted(table.names()) == sorted([name, "café.png"])
    table.store.close()


def test_a_planted_row_that_is_not_json_reads_as_no_row(tmp_path):
    """A table may come from anyone: its values are parsed as JSON and nothing else."""
    import pickle

    path = tmp_path / "r.sqlite"
    store = RowStore(path)
    store.table("t").put_many({"a.png": [1, 2, "s"]})
    store.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO rows (tab, name, value) SELECT id, ?, ? FROM tables",
               (b"b.png", pickle.dumps(os.system)))
    db.execute("INSERT INTO rows (tab, name, value) SELECT id, ?, ? FROM tables", ("c.png", 5))
    db.commit()
    db.close()
    table = RowStore(path).table("t")
    assert table.get_many(["a.png", "b.png", "c.png"]) == {"a.png": [1, 2, "s"]}
    table.store.close()


def test_a_write_that_fails_leaves_no_row(tmp_path):
    table = RowStore(tmp_path / "r.sqlite").table("t")
    table.put_many({"a": [1]})
    with pytest.raises(TypeError):
        table.put_many({"b": [2], "c": [object()]})  # the second cannot be stored
    assert dict(table.items()) == {"a": [1]}
    assert MemoryRows({"a": 1}).get_many(["a", "b"]) == {"a": 1}
    table.store.close()


def test_a_signature_reads_rows_by_block_and_drops_the_rows_of_files_gone(tmp_path, monkeypatch):
    """The folder signature reads and writes its files' rows a block at a time (the same
    signature whatever the block), hashes only files whose size or mtime changed, and a file
    removed from the folder loses its row."""
    from vlitc.run import fingerprint
    from vlitc.run.fingerprint import FileState

    root = tmp_path / "img"
    root.mkdir()
    for i in range(23):
        (root / f"{i:03d}.png").write_bytes(bytes([i]) * (i + 1))
    whole = FileState(tmp_path / "whole")
    expected = whole.dir_signature(root)
    whole.close()
    monkeypatch.setattr(fingerprint, "BLOCK", 5)
    hashed: list[str] = []
    real = fingerprint._content
    monkeypatch.setattr(fingerprint, "_content", lambda p: hashed.append(os.path.basename(p)) or real(p))
    state = FileState(tmp_path / "blocks")
    try:
        assert state.dir_signature(root) == expected and len(hashed) == 23
        (root / "004.png").unlink()
        (root / "007.png").write_bytes(b"changed")
        hashed.clear()
        changed = state.dir_signature(root)
        assert changed != expected and hashed == ["007.png"]
        table = dict(state.known_hashes(root).items())
        assert sorted(table) == sorted(p.name for p in root.iterdir())
        assert table["007.png"][2] == fingerprint.sha256_file(root / "007.png")
    finally:
        state.close()
    fresh = FileState(tmp_path / "fresh")
    assert fresh.dir_signature(root) == changed
    fresh.close()


def test_two_stores_on_one_file_create_a_table_once(tmp_path):
    """Two builds on one cache may both find a table missing and create it: each gets its id."""
    one, two = RowStore(tmp_path / "r.sqlite"), RowStore(tmp_path / "r.sqlite")
    assert one.table("t").get_many(["a"]) == {} and two.table("t").get_many(["a"]) == {}
    one._conn().execute("INSERT INTO tables (key) VALUES ('t')")  # made by the other, after two looked
    two.table("t").put_many({"a": [1]})
    assert one.table("t").get_many(["a"]) == {"a": [1]}
    one.close()
    two.close()


def test_a_new_connection_waits_for_another_build_that_locks_the_file_meanwhile(tmp_path):
    """Switching a new file to WAL may fail at once with "database is locked" while another
    build opens it too (no busy handler runs for it): the setup is tried again, and another
    error is raised as it is."""
    from vlitc import rows

    class Flaky:
        def __init__(self, failures: int, message: str = "database is locked"):
            self.db = sqlite3.connect(tmp_path / f"{failures}-{message[:4]}.sqlite", isolation_level=None)
            self.failures, self.message, self.tries = failures, message, 0

        def execute(self, sql: str):
            if sql.startswith("PRAGMA journal_mode"):
                self.tries += 1
                if self.tries <= self.failures:
                    raise sqlite3.OperationalError(self.message)
            return self.db.execute(sql)

    flaky = Flaky(3)
    rows._setup(flaky)
    assert flaky.tries == 4
    assert flaky.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {r[0] for r in flaky.db.execute("SELECT name FROM sqlite_master")} >= {"tables", "rows"}
    broken = Flaky(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        rows._setup(broken)
    assert broken.tries == 1
