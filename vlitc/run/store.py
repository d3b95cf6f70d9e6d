"""The cache directory: content-addressed objects, step entries, state records, item caches.

    <cache>/objects/ab/abcdef...       a file (an export, a release file), named by its sha256
    <cache>/objects/ab/abcdef....zst   a shard, a stats column piece or a selection, stored
                                   zstd-compressed and named by the sha256 of its plain bytes
    <cache>/steps/<key>.json       a step's outputs, counters and notes (:data:`LAYOUT`)
    <cache>/state/<recipe>/<step>.json   the components of the last key built for a step,
                                   so `vlitc plan` can say why a step is stale
    <cache>/items/<namespace>/     diskcache stores for per-item results (stats, embeddings)
    <cache>/files/                 file hashes by (path, size, mtime)
    <cache>/tmp/                   temp files of a build in progress (``vlitc cache gc``
                                   removes those no running build holds)
    <cache>/.lock                  held shared by every open store, exclusively by gc

A step output is either **full** (``shards``: the records as JSON lines, 20,000 a shard) or a
**view** of the full output of the step that last changed the sample bodies (``view``): a
``select`` bitmap of the base rows it holds (absent: all of them) and ``columns``, each a value
per base row set at a path of the record (a filter's ``meta.stats.<label>``, a drop mark's
``meta.drop``), stored as one piece per base shard. A measure adds a column to its input's view,
a filter narrows the selection (its dropped samples are a view with a ``meta.drop`` column), so a
chain of filters stores ids and stats, not copies. Reading a view puts its records together: each
selected base record with its column values set.

An output's ``hash`` (what downstream step keys record of it) is determined by its content: a
full output's is the hash of its shards' sha256 (of their plain JSON lines); a view's
(:func:`view_hash`, layout 3) is the hash of its base's hash, its selection's sha256 and its
columns' paths and pieces' sha256, so a measure or a filter never puts its records together,
re-encodes or hashes their bodies to name its output. Every one of those objects is named by its
content and independent of the engine, the worker count and the chunking, so the keys are too.
(Layout 2 hashed a view as the JSON lines of its records; its entries are ignored.)

Every write goes to a temp file and is renamed into place; a corrupt entry is a warning and a miss,
and an entry of another layout (an older vlitc's) is a miss, never read. Objects are checked
against their sha256 whenever they are read (a shard or column piece before any of its records is
given out, a file as it is copied into a release): a bad one raises :class:`CorruptObject`, and the
executor removes it and reruns the step that produced it. An object written again always replaces
the one on disk, so a damaged object is repaired by the next step that produces it.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from vlitc.errors import CacheError, VlitcError
from vlitc.paths import atomic_write
from vlitc.run.projection import projection, top_fields

SHARD_SIZE = 20_000
#: full shards a :class:`ShardWriter` lets wait to be stored while it makes the next
PENDING_SHARDS = 2
#: the layout of step entries and their outputs; an entry of any other layout is ignored
LAYOUT = 3
#: the layouts whose entries share this one's object names (gc keeps their objects alike)
VIEW_LAYOUTS = (2, 3)
#: the most bytes one stored shard may expand to (a bigger one is corrupt, never read whole)
MAX_PLAIN = 4 << 30
#: a compressed object is expanded in one call when its frame says it is at most this many times
#: its size (stored shards shrink 3 to 20 times), else in bounded pieces
ONE_CALL_RATIO = 64
#: zstd level of stored shards (fast; sample bodies compress about 20x)
ZSTD_LEVEL = 1
ZST = ".zst"


class CorruptObject(CacheError):
    """A cached object is missing or its bytes do not match the sha256 it is stored under."""

    def __init__(self, sha: str, path: Path):
        self.sha, self.path = sha, path
        super().__init__(f"cache object {sha[:12]} is corrupt (its bytes do not match its hash)")

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised in the build
        return (CorruptObject, (self.sha, self.path))


def _output_objects(out: dict, own: bool) -> set[str]:
    """Object file names of one output (``own``: not those of a view's base)."""
    view = out.get("view")
    if view is None:
        return {s["sha256"] + ZST for s in out.get("shards", [])}
    names = set() if own else _output_objects(view["base"], False)
    if view.get("select"):
        names.add(view["select"]["sha256"] + ZST)
    for col in view["columns"]:
        names |= {p["sha256"] + ZST for p in col["pieces"]}
    return names


def entry_objects(entry: dict, own: bool = False) -> set[str]:
    """The object file names a step entry refers to (its shards, views and files); ``own``
    leaves out the base of its views (the objects another step produced)."""
    if entry.get("layout") not in VIEW_LAYOUTS:  # an older layout: shards stored plain under their sha
        out = {s["sha256"] for o in entry.get("outputs", {}).values() for s in o.get("shards", [])}
    else:
        out = set().union(*(_output_objects(o, own) for o in entry["outputs"].values()))
    return out | {f["sha256"] for f in entry.get("files", [])}


def _sized(out: dict) -> Iterator[tuple[str, int]]:
    """(object file name, stored size) of every object an output refers to."""
    view = out.get("view")
    if view is None:
        for s in out.get("shards", []):
            yield s["sha256"] + ZST, s["size"]
        return
    yield from _sized(view["base"])
    if view.get("select"):
        yield view["select"]["sha256"] + ZST, view["select"]["size"]
    for col in view["columns"]:
        for p in col["pieces"]:
            yield p["sha256"] + ZST, p["size"]


def _file_name(name: str) -> str:
    """``name`` as one file name (every character but letters, digits and ``._-`` as ``_``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def set_path(record: dict, path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` (``["meta", "stats", label]``), making the dicts on the way as
    :func:`vlitc.run.shards.set_stats` does (same key order, so the same JSON line)."""
    for key in path[:-1]:
        record = record.setdefault(key, {})
    record[path[-1]] = value


def combined_hash(shas: Iterable[str]) -> str:
    """An output's hash from the sha256 of its shards (of their plain JSON lines)."""
    return hashlib.sha256(",".join(shas).encode()).hexdigest()


def view_hash(base: dict, select: dict | None, columns: list[dict]) -> str:
    """The hash of a view: of its base's hash, its selection and its columns' pieces (each
    named by the sha256 of its plain bytes), so equal inputs and equal stats give equal keys."""
    parts = [base["hash"], select["sha256"] if select else "",
             *(f"{'.'.join(c['path'])}=" + ",".join(p["sha256"] for p in c["pieces"]) for c in columns)]
    return hashlib.sha256(orjson.dumps(["view", *parts])).hexdigest()


def _compressor() -> Any:
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL)


def is_view(out: dict) -> bool:
    return "view" in out


def base_of(out: dict) -> dict:
    """The full output whose bodies ``out`` holds (``out`` itself when it is full)."""
    return out["view"]["base"] if is_view(out) else out


def _blocks(pieces: Iterable[tuple[bytes, int]], size: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of ``size`` JSON lines (the last one shorter) from pieces of whole lines, each
    with its number of lines: a piece is cut where its lines end (a JSON line holds no raw
    newline), found with one vectorised scan."""
    import numpy as np

    carry: list[bytes] = []
    carried = 0
    for data, n in pieces:
        if not n:
            continue
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1 if n > 1 else [len(data)]
        if len(ends) != n:
            raise CacheError(f"a cached shard holds {len(ends)} lines where its step entry says {n}; "
                             "the cache is damaged: remove its folder and build again")
        pos = idx = 0
        if carried:
            take = min(size - carried, n)
            pos = int(ends[take - 1])
            carry.append(data[:pos])
            carried, idx = carried + take, take
            if carried == size:
                yield b"".join(carry), size
                carry, carried = [], 0
        while n - idx >= size:
            cut = int(ends[idx + size - 1])
            yield data[pos:cut], size
            pos, idx = cut, idx + size
        if idx < n:
            carry.append(data[pos:])
            carried += n - idx
    if carried:
        yield b"".join(carry), carried


class ShardWriter:
    """Writes records as JSON lines into content-addressed shards of ``shard_size`` records.

    A full shard is hashed, compressed and stored on a thread of the writer's own while the
    caller goes on making the next one (zstd and sha256 let go of the GIL): at most
    :data:`PENDING_SHARDS` wait, and :meth:`close` gives the shards in order."""

    def __init__(self, store: Store, shard_size: int | None = None):
        self.store = store
        self.shard_size = shard_size or SHARD_SIZE
        self.shards: list[dict] = []
        self.count = 0
        self._parts: list[bytes] = []
        self._n = 0
        self._pool: Any = None
        self._pending: collections.deque = collections.deque()

    def _close_shard(self) -> None:
        if not self._n:
            return
        data, n = b"".join(self._parts), self._n
        self._parts = []
        self._n = 0
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="vlitc-shards")
        while len(self._pending) >= PENDING_SHARDS:
            self.shards.append(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self.store.put_shard, data, n))

    def _drain(self) -> None:
        """Wait for the shards being stored; the first failure is raised once all have ended."""
        failure: BaseException | None = None
        while self._pending:
            try:
                self.shards.append(self._pending.popleft().result())
            except BaseException as e:  # noqa: BLE001 - raised below, after the others end
                failure = failure or e
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if failure is not None:
            raise failure

    def write(self, record: dict) -> None:
        self.write_line(orjson.dumps(record) + b"\n")

    def write_line(self, line: bytes) -> None:
        """Append one record already encoded as :meth:`write` encodes it."""
        self._parts.append(line)
        self._n += 1
        self.count += 1
        if self._n >= self.shard_size:
            self._close_shard()

    def write_all(self, records: Iterable[dict]) -> None:
        for r in records:
            self.write(r)

    def cut(self) -> None:
        """End the shard being filled here, however few records it holds (a task's output
        ends a shard where each run of its input does, :func:`vlitc.run.runners.segments`)."""
        self._close_shard()

    def write_encoded(self, data: bytes, n: int) -> None:
        """Append ``n`` records already encoded as :meth:`write` encodes them (JSON lines): the
        same shards as writing them one by one, without decoding them."""
        while n:
            room = self.shard_size - self._n
            if n <= room:
                part, data, k = data, b"", n
            else:  # the shard fills up inside this block: cut after ``room`` lines
                cut = -1
                for _ in range(room):
                    cut = data.index(b"\n", cut + 1)
                part, data, k = data[:cut + 1], data[cut + 1:], room
            n -= k
            self._parts.append(part)
            self._n += k
            self.count += k
            if self._n >= self.shard_size:
                self._close_shard()

    def close(self) -> dict:
        self._close_shard()
        self._drain()
        return {"shards": self.shards, "count": self.count,
                "hash": combined_hash(s["sha256"] for s in self.shards)}

    def abort(self) -> None:
        self._parts = []
        self._n = 0
        try:  # the shards already handed over end (stored, or not); nothing is raised
            self._drain()
        except BaseException:  # noqa: BLE001 - the block's own exception is the one raised
            pass

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        """A block that raises leaves no half-written shard behind (:meth:`abort`)."""
        if kind is not None:
            self.abort()


class ViewWriter:
    """Writes a view over ``source`` (full or a view itself): it is given, for each of
    ``source``'s selected rows in order, whether the view holds it and, for a new column at
    ``path``, the encoded value the row holds there (``b""``: none). No record body is read,
    written or hashed: the view's hash is :func:`view_hash`."""

    def __init__(self, store: Store, source: dict, path: list[str] | None = None):
        import numpy as np

        self.store = store
        self.base = base_of(source)
        view = source.get("view") or {}
        self.columns: list[dict] = list(view.get("columns", []))
        self.path = path
        counts = [s["count"] for s in self.base["shards"]]
        self.starts = np.cumsum([0, *counts])
        self.total = int(self.starts[-1])
        self.selected = store.selection(source)
        # the source's rows of the base, when it selects some (else every row: no array of them,
        # 80 MB over 10M rows); 32 bits where they fit
        self.rows = None if self.selected is None else \
            np.flatnonzero(self.selected).astype(np.int32 if self.total < 2**31 else np.int64)
        self.n_rows = self.total if self.rows is None else len(self.rows)
        # selected rows per base shard: the new column's piece for a shard is complete after them
        self.per_shard = counts if self.rows is None else np.diff(np.searchsorted(self.rows, self.starts)).tolist()
        self.kept = bytearray()
        self._values: list[bytes] = []
        self._pieces: list[dict] = []
        self._given = 0  # source rows whose values are in pieces already
        self._due = 0  # source rows after which the next piece is complete

    def add(self, kept: bool, value: bytes = b"") -> None:
        """The next row of the source: whether this view holds it, and its value in the new
        column."""
        self.extend(b"\x01" if kept else b"\x00", [value])

    def extend(self, kept: Any, values: list[bytes] | None = None) -> None:
        """The next rows of the source: whether the view holds each (booleans, or bytes of 0
        and 1) and, for a view with a new column, each row's value (as :meth:`add`)."""
        import numpy as np

        n = len(kept)
        self.kept += kept if isinstance(kept, bytes | bytearray) else np.asarray(kept, dtype=bool).tobytes()
        if self.path is not None:
            if values is None or len(values) != n:
                raise VlitcError(f"a view column was given {0 if values is None else len(values)} "
                                 f"values for {n} rows")
            self._values.extend(values)
            if len(self.kept) >= self._due:
                self._close_pieces()

    def _close_pieces(self) -> None:
        """Write the pieces of every base shard whose selected rows have all been given."""
        while len(self._pieces) < len(self.per_shard) and \
                len(self.kept) >= self._given + self.per_shard[len(self._pieces)]:
            k = len(self._pieces)
            n, m = int(self.starts[k + 1] - self.starts[k]), self.per_shard[k]
            values, self._values = self._values[:m], self._values[m:]
            if m != n:  # rows the source does not hold have no value (it has rows, then)
                assert self.rows is not None
                lines = [b""] * n
                first = int(self.starts[k])
                for r, v in zip(self.rows[self._given:self._given + m].tolist(), values, strict=True):
                    lines[r - first] = v
                values = lines
            self._pieces.append(self.store.put_object(b"\n".join(values) + b"\n" if n else b""))
            self._given += m
        more = len(self._pieces) < len(self.per_shard)
        self._due = self._given + self.per_shard[len(self._pieces)] if more else self.n_rows + 1

    def close(self) -> dict:
        import numpy as np

        if len(self.kept) != self.n_rows:
            raise VlitcError(f"a view was given {len(self.kept)} of its source's {self.n_rows} records")
        columns = list(self.columns)
        if self.path is not None:
            self._close_pieces()
            columns.append({"path": self.path, "pieces": self._pieces})
        held = np.frombuffer(self.kept, dtype=bool)
        if self.rows is None:
            keep = held
        else:
            keep = np.zeros(self.total, dtype=bool)
            keep[self.rows[held]] = True
        select = None if keep.all() else self.store.put_object(np.packbits(keep).tobytes())
        return {"view": {"base": self.base, "select": select, "columns": columns},
                "count": int(held.sum()), "hash": view_hash(self.base, select, columns)}


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
        self._rows: dict[str, Any] = {}
        self._recent: dict[str, list[bytes]] = {}  # sha -> lines of the shards read last
        self.warnings: list[str] = []

    # objects
    def object_path(self, name: str) -> Path:
        """Where the object ``name`` lies (a sha256, with ``.zst`` for a compressed object)."""
        return self.root / "objects" / name[:2] / name

    def adopt(self, tmp: Path, name: str) -> None:
        """Move a finished temp file into the object store under its name. It replaces what is
        there: the new bytes were just hashed, the old ones may have been damaged since."""
        dest = self.object_path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def discard(self, name: str) -> None:
        """Remove a (corrupt) object, so that nothing reads it again before it is rebuilt."""
        self.object_path(name).unlink(missing_ok=True)

    def put_file(self, path: Path, move: bool = False) -> tuple[str, int]:
        """Copy a file into the object store; returns (sha256, size). ``move``: a file no other
        name links to (one a step has just written in the store's temp folder) is moved there
        instead; one that is also elsewhere (a hard-linked image) is still copied."""
        from vlitc.hashing import sha256_file

        sha = sha256_file(path)
        if move:
            st = os.stat(path)
            if st.st_nlink == 1:
                try:
                    self.adopt(path, sha)
                    return sha, st.st_size
                except OSError:  # another filesystem: copied below
                    pass
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="file-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.adopt(Path(tmp), sha)
        return sha, path.stat().st_size

    def _put(self, data: bytes, name: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="file-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.adopt(Path(tmp), name)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Put bytes into the object store as they are (a release file); returns (sha256, size)."""
        sha = hashlib.sha256(data).hexdigest()
        self._put(data, sha)
        return sha, len(data)

    def put_compressed(self, data: bytes, sha: str | None = None) -> int:
        """Store ``data`` compressed under the sha256 of its plain bytes; returns the stored size."""
        packed = _compressor().compress(data)
        self._put(packed, (sha or hashlib.sha256(data).hexdigest()) + ZST)
        return len(packed)

    def put_shard(self, data: bytes, count: int) -> dict:
        """Store a shard (``count`` JSON lines): its entry in an output's ``shards``."""
        sha = hashlib.sha256(data).hexdigest()
        return {"sha256": sha, "count": count, "size": self.put_compressed(data, sha)}

    def put_object(self, data: bytes) -> dict:
        """A compressed object for a view (a column piece, a selection): ``{sha256, size}``."""
        sha = hashlib.sha256(data).hexdigest()
        return {"sha256": sha, "size": self.put_compressed(data, sha)}

    def plain(self, sha: str) -> bytes:
        """The plain bytes of a compressed object, checked against their sha256."""
        import zstandard

        path = self.object_path(sha + ZST)
        try:
            with open(path, "rb") as fh:
                packed = fh.read()
            # in one call when the frame states a size it may well have (one allocation);
            # else read in pieces up to a bound: a planted object may expand without end
            size = zstandard.get_frame_parameters(packed).content_size
            if size <= min(MAX_PLAIN, ONE_CALL_RATIO * len(packed) + (1 << 20)):
                data = zstandard.ZstdDecompressor().decompress(packed)
            else:
                with zstandard.ZstdDecompressor().stream_reader(packed) as reader:
                    data = reader.read(MAX_PLAIN + 1)
                    while len(data) <= MAX_PLAIN and (more := reader.read(MAX_PLAIN + 1 - len(data))):
                        data += more
        except (FileNotFoundError, zstandard.ZstdError):
            raise CorruptObject(sha, path) from None
        if len(data) > MAX_PLAIN:
            raise CorruptObject(sha, path)
        if hashlib.sha256(data).hexdigest() != sha:
            raise CorruptObject(sha, path)
        return data

    def writer(self) -> ShardWriter:
        return ShardWriter(self)

    def view_writer(self, source: dict, path: list[str] | None = None) -> ViewWriter:
        return ViewWriter(self, source, path)

    def selection(self, output: dict) -> Any:
        """Which rows of its base a view holds (a boolean array), or None for all of them."""
        import numpy as np

        select = (output.get("view") or {}).get("select")
        if not select:
            return None
        total = sum(s["count"] for s in base_of(output)["shards"])
        bits = np.frombuffer(self.plain(select["sha256"]), dtype=np.uint8)
        return np.unpackbits(bits, count=total).astype(bool)

    def read(self, output: dict) -> Iterator[dict]:
        """The records of a step output, shard by shard; each object is checked against its
        sha256 before any of its records is given out (:class:`CorruptObject` otherwise)."""
        if is_view(output):
            yield from (rec for _i, rec in self._view(output, decode=True))
            return
        for shard in output["shards"]:
            for line in self.plain(shard["sha256"]).splitlines():
                yield orjson.loads(line)

    def read_lines(self, output: dict) -> Iterator[bytes]:
        """The output's records as their JSON lines (a full output's are not decoded)."""
        if is_view(output):
            yield from (line for _i, line in self._view(output, decode=False))
            return
        for shard in output["shards"]:
            data = self.plain(shard["sha256"])
            start = 0
            while start < len(data):
                end = data.index(b"\n", start) + 1
                yield data[start:end]
                start = end

    def read_some(self, output: dict, only: Any) -> Iterator[tuple[int, bytes]]:
        """``(index, JSON line)`` of the records whose index ``only`` (a boolean array over the
        output's records) marks; the others are not put together at all."""
        if is_view(output):
            yield from self._view(output, decode=False, only=only)
            return
        for i, line in enumerate(self.read_lines(output)):
            if only[i]:
                yield i, line

    def column(self, output: dict, path: list[str]) -> Iterator[Any]:
        """The value at ``path`` of each record (``None`` where there is none): from the view's
        column when it has one (no body is read), else from the records."""
        import numpy as np

        view = output.get("view") or {}
        col = next((c for c in reversed(view.get("columns", [])) if c["path"] == path), None)
        if col is None:
            for rec in self.read(output):
                value: Any = rec
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                yield value
            return
        selected = self.selection(output)
        start = 0
        for k, shard in enumerate(view["base"]["shards"]):
            n = shard["count"]
            rows = range(n) if selected is None else np.flatnonzero(selected[start:start + n]).tolist()
            start += n
            if len(rows):
                values = self.plain(col["pieces"][k]["sha256"]).splitlines()
                for j in rows:
                    yield orjson.loads(values[j]) if values[j] else None

    def read_chunks(self, output: dict, size: int) -> Iterator[tuple[bytes, int]]:
        """The output's records as blocks of up to ``size`` JSON lines (a full output's shards
        are cut where their lines end, found all at once, not line by line)."""
        if is_view(output):
            yield from _blocks(((line, 1) for line in self.read_lines(output)), size)
            return
        yield from _blocks(((self.plain(s["sha256"]), s["count"]) for s in output["shards"]), size)

    def read_range(self, output: dict, lo: int, hi: int, fields: Iterable[str] | None = None,
                   project: bool = False) -> Iterator[dict]:
        """The records ``lo`` to ``hi`` (excluded) of an output, decoded: what a map step's
        chunk reads in the process that runs it (only the shards and pieces they lie in).
        ``fields``: the fields the reader looks at, as an op declares them (:attr:`vlitc.ops.
        base.Op.reads`): a view's columns under other top-level fields are left out (not even
        read); with ``project``, every field it looks at: each record is decoded into those
        alone (:mod:`vlitc.run.projection`)."""
        if is_view(output):
            yield from (rec for _i, rec in self._view(output, decode=True, lo=lo, hi=hi, fields=fields,
                                                      project=project))
            return
        loads = projection(tuple(fields)).loads if fields and project else orjson.loads
        start = 0
        for shard in output["shards"]:
            n = shard["count"]
            if start < hi and start + n > lo:
                lines = self._lines(shard["sha256"])
                for line in lines[max(lo - start, 0):min(hi - start, n)]:
                    yield loads(line)
            start += n

    def _lines(self, sha: str) -> list[bytes]:
        """A shard's lines; the last few are kept, as neighbouring chunks share shards."""
        hit = self._recent.pop(sha, None)
        if hit is None:
            hit = self.plain(sha).splitlines()
        self._recent[sha] = hit
        while len(self._recent) > 2:
            del self._recent[next(iter(self._recent))]
        return hit

    def _view(self, output: dict, decode: bool, only: Any = None, lo: int = 0,
              hi: int | None = None, fields: Iterable[str] | None = None,
              project: bool = False) -> Iterator[tuple[int, Any]]:
        """A view's records put together, with their index: each selected base row with its
        column values set (with ``only``, just the records it marks; with ``lo``/``hi``, just
        the records of that index range; with ``fields``, only the columns under them, and
        with ``project`` decoded into those fields, :meth:`read_range`)."""
        import numpy as np

        view = output["view"]
        wanted_fields = None if fields is None else top_fields(fields)
        columns = [(c["path"], c["pieces"]) for c in view["columns"]
                   if wanted_fields is None or c["path"][0] in wanted_fields]
        loads = projection(tuple(fields)).loads if fields and project and decode else orjson.loads
        selected = self.selection(output)
        start = index = 0
        for k, shard in enumerate(view["base"]["shards"]):
            n = shard["count"]
            if hi is not None and index >= hi:
                break
            rows = range(n) if selected is None else np.flatnonzero(selected[start:start + n]).tolist()
            start += n
            first, index = index, index + len(rows)
            if index <= lo:
                continue
            last = index
            if lo > first or (hi is not None and hi < index):  # the part of the range in this shard
                a, b = max(lo - first, 0), len(rows) if hi is None else min(hi - first, len(rows))
                rows, first, last = rows[a:b], first + a, first + b
            firsts: Iterable[int] = range(first, last)
            if only is not None:
                wanted = np.asarray(only[first:last], dtype=bool)
                rows = [r for r, w in zip(rows, wanted, strict=True) if w]
                firsts = (np.flatnonzero(wanted) + first).tolist()
            if not len(rows):
                continue
            body = self._lines(shard["sha256"])
            cols = [(path, self.plain(pieces[k]["sha256"]).splitlines()) for path, pieces in columns]
            if len(body) != n or any(len(values) != n for _p, values in cols):
                raise CorruptObject(shard["sha256"], self.object_path(shard["sha256"] + ZST))
            for i, j in zip(firsts, rows, strict=True):
                values = [(p, col[j]) for p, col in cols if col[j]]
                if not values and not decode:
                    line = body[j] + b"\n"
                else:
                    rec = loads(body[j])
                    for p, v in values:
                        set_path(rec, p, orjson.loads(v))
                    if decode:
                        yield i, rec
                        continue
                    line = orjson.dumps(rec) + b"\n"
                yield i, line

    # step entries
    def _entry_path(self, key: str) -> Path:
        return self.root / "steps" / f"{key}.json"

    def get_entry(self, key: str) -> dict | None:
        """The entry of ``key``; None when there is none, when it is corrupt (a warning) or when
        it is of another layout (an older vlitc's: ignored, its step runs again)."""
        path = self._entry_path(key)
        if not path.exists():
            return None
        try:
            entry = orjson.loads(path.read_bytes())
            if not isinstance(entry, dict) or entry.get("layout") != LAYOUT:
                return None
            for out in entry["outputs"].values():
                for name, size in _sized(out):
                    if self.object_path(name).stat().st_size != size:
                        raise ValueError(f"object {name[:12]} has the wrong size")
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
        entry["layout"] = LAYOUT
        atomic_write(self._entry_path(key), orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))

    # state records (for staleness reasons)
    def _state_path(self, recipe: str, step: str) -> Path:
        safe = _file_name(step)
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
            safe = _file_name(namespace)
            self._items[namespace] = open_cache(self.root / "items" / safe)
        return self._items[namespace]

    def row_store(self, namespace: str) -> Any:
        """The per-file tables ``namespace`` (:class:`vlitc.rows.RowStore`): JSON rows only."""
        from vlitc.rows import RowStore

        if namespace not in self._rows:
            safe = _file_name(namespace)
            self._rows[namespace] = RowStore(self.root / "rows" / f"{safe}.sqlite")
        return self._rows[namespace]

    def close(self) -> None:
        for c in self._items.values():
            c.close()
        self._items.clear()
        for r in self._rows.values():
            r.close()
        self._rows.clear()
        if self._held is not None:
            self._held.close()
            self._held = None
