"""Image checks for sources: existence, decodability (Pillow), size and content hash.

Hashing a large image set is the slow part of loading a source, so results are remembered in a
persistent store keyed by the image's path, byte size and modification time: an unchanged image
set is stat'ed, never read, on a rebuild. The store is anything whose ``table(key)`` gives a
table of rows (:mod:`vlitc.rows`: the run's :class:`vlitc.rows.RowStore`, ``ctx.row_store
("image-hash")``): a folder's table has a row per image, and each batch of images reads its rows
and writes the ones it computed, so no table of millions of images is held whole.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vlitc.hashing import sha256_file
from vlitc.paths import Containment, folder_entries
from vlitc.rows import MemoryRows, Rows, RowStore, SQLiteRows
from vlitc.run.heap import step_cache

T = TypeVar("T")
R = TypeVar("R")

#: bump when what a table entry means changes; old tables are then ignored
STORE_VERSION = 2
#: images per task when an engine checks them
MAP_CHUNK = 2000
#: images one thread checks in a row
THREAD_RUN = 256
#: files at least this large (bytes) are checked on threads, smaller ones in a plain loop: a
#: check holds the GIL while Pillow parses the header in Python and releases it only to read,
#: hash and decode, so threads pay only for files whose reading, hashing or decoding outweighs
#: the header (COCO photos, ~160 KB) and cost up to 9x a plain loop on tiny files
THREAD_MIN_BYTES = 64 << 10
#: the same when images are decoded (decoding runs outside the GIL: threads pay sooner)
THREAD_MIN_DECODE = 16 << 10


@dataclass
class ImageInfo:
    """What is known about one image file; ``error`` is set when it is missing or corrupt."""

    path: str
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    error: str | None = None  # "missing", "corrupt: <reason>" or "outside: <reason>"

    @property
    def ok(self) -> bool:
        return self.error is None

    def packed(self) -> tuple:
        """The info as a plain tuple (:meth:`unpacked` gives it back): what crosses between
        processes, pickled several times faster than the object."""
        return self.path, self.width, self.height, self.sha256, self.error

    @staticmethod
    def unpacked(t: tuple) -> ImageInfo:
        return ImageInfo(*t)


#: the format a file name's extension names: Pillow tries it alone first
FORMAT_OF = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def _format_of(path: Path | str) -> str | None:
    """The format :data:`FORMAT_OF` gives ``path``'s extension (``None`` for any other)."""
    return FORMAT_OF.get(os.path.splitext(path)[1].lower())


def probe(path: Path | str, decode: bool) -> tuple[int, int]:
    """Width and height from the header; with ``decode`` the whole image is decoded too.

    A header-only read of a JPEG or PNG (the format its extension names) takes the size from
    ``imagesize``, which reads only the bytes up to it; anything it cannot read, or a size
    Pillow would warn about (a decompression bomb), is opened with Pillow, for its size or its
    error. Pillow tries the format the extension names alone first (no other format accepts a
    JPEG's or a PNG's first bytes, so one it opens is what opening it with every format gives);
    a file it cannot identify is opened again with every format, for the same result or error."""
    from PIL import Image, UnidentifiedImageError

    fmt = _format_of(path)
    if fmt is not None and not decode:
        size = _header_size(path)
        if size is not None and _within_limit(size):
            return size
    if fmt is not None:
        try:
            return _size(Image.open(path, formats=(fmt,)), decode)
        except UnidentifiedImageError:
            pass
    return _size(Image.open(path), decode)


def _header_size(path: Path | str | io.BytesIO) -> tuple[int, int] | None:
    """The size a JPEG's or PNG's header states (``imagesize``, from the file or from bytes
    read of it), or ``None`` where it cannot tell (another format, a header it does not read):
    Pillow then decides."""
    import imagesize

    try:
        width, height = imagesize.get(path, exif_rotation=False)  # the stored size, as Pillow
    except Exception:  # noqa: BLE001 - a file it cannot read goes to Pillow, which says why
        return None
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def head_size(path: str, head: bytes) -> tuple[int, int] | None:
    """The header size :func:`probe` reads without decoding, from ``head``, the first bytes of
    the file at ``path`` (read for its hash, :func:`vlitc.hashing.sha256_file_head`): for a JPEG
    or PNG whose header lies within them; ``None`` for any other file, which :func:`probe`
    then opens. The header is parsed in order, so what the first bytes state is what the whole
    file does. The decompression-bomb limit is left to the reader (:func:`infos_of`): it is
    Pillow's setting when the size is used, not when the file was hashed."""
    if _format_of(path) is None:
        return None
    return _header_size(io.BytesIO(head))


def file_row(size: int, mtime: int, sha: str, size_in_header: tuple[int, int] | None) -> list:
    """A file's row in a folder signature's table (:class:`vlitc.run.fingerprint.FileState`):
    ``[size, mtime_ns, sha256]``, and the width and height of a JPEG's or PNG's header when the
    bytes hashed stated them (:func:`head_size`)."""
    return [size, mtime, sha] if size_in_header is None else [size, mtime, sha, *size_in_header]


def file_row_of(row: Any, size: int, mtime: int) -> tuple[str, tuple[int, int] | None] | None:
    """The sha256 and the header size (or ``None``) a folder signature's row (:func:`file_row`)
    gives a file of this size and mtime; ``None`` for a row of another state of the file, or of
    no shape a signature writes (the table may come from anyone). A row of the earlier layout,
    ``[size, mtime_ns, sha256]``, gives the hash alone."""
    if not isinstance(row, list) or len(row) not in (3, 5) or row[0] != size or row[1] != mtime \
            or not isinstance(row[2], str):
        return None
    if len(row) == 3:
        return row[2], None
    width, height = row[3], row[4]
    if type(width) is not int or type(height) is not int or width <= 0 or height <= 0:
        return None
    return row[2], (width, height)


def _size(image: Any, decode: bool) -> tuple[int, int]:
    with image as im:
        size = im.size
        if decode:
            im.load()
    return int(size[0]), int(size[1])


class ImageChecker:
    """Checks the images under one root folder, remembering results by (path, size, mtime).

    ``decode``: fully decode each image with Pillow (catches truncated files); otherwise only the
    header is read for the size. ``hash``: compute each file's sha256. ``read_size``: open the file
    for its size at all (off: only existence is checked, sizes come from the annotations).
    ``contain``: a path that leaves ``root`` (absolute, ``..``, or a symlink leading out) gets
    the error ``outside: <reason>`` and is never opened (see :mod:`vlitc.paths`). ``map``: the
    build's engine (``ctx.map_chunks``): images to check are then read in worker processes.
    ``known``: sha256 already computed for files under ``root`` this run, by relative path, as
    ``[size, mtime_ns, sha256]`` (the folder's signature, :meth:`vlitc.ops.base.OpContext.
    known_file_hashes`, a :class:`vlitc.rows.Rows`): a file whose size and mtime match is not
    hashed again. Both tables are read a batch of paths at a time.
    """

    def __init__(
        self,
        root: Path,
        store: Any = None,
        *,
        decode: bool = True,
        hash: bool = True,
        read_size: bool = True,
        workers: int | None = None,
        contain: bool = True,
        map: Callable[[Callable[[Any, Any], Any], Any, Iterable[Any]], Iterator[Any]] | None = None,
        known: Rows | None = None,
    ):
        self.root = Path(root)
        self.contain = Containment(root) if contain else None
        self.store = store
        self.decode, self.hash, self.read_size = decode, hash, read_size or decode
        self.workers = workers or min(8, (os.cpu_count() or 2) * 2)
        self.map = map
        self.known = known
        self.hits = 0
        self.computed = 0
        self._table: Rows | None = None
        #: while a check runs: the signature rows its plan read, the paths whose row is their
        #: check (:func:`_stated`), and of those whether this build's signature hashed them
        self._known_rows: dict[str, Any] | None = None
        self._stated: set[str] = set()
        self._fresh: dict[str, bool] = {}
        #: this checker's own: a worker keeps the checker it makes for it (and its folder's
        #: listing) for this checker's runs alone, never for a later build's (a Ray worker
        #: outlives a build: the folder may have changed since)
        self._token = os.urandom(8).hex()

    # -- store ------------------------------------------------------------------------------
    def _store_key(self) -> str:
        root = os.path.realpath(self.root)
        return f"images-v{STORE_VERSION}:{hashlib.sha256(root.encode()).hexdigest()}"

    def _load_table(self) -> Rows:
        """The folder's table (the store's, or this checker's own without a store)."""
        if self._table is None:
            self._table = self.store.table(self._store_key()) if self.store is not None else MemoryRows()
        return self._table

    # -- checks -----------------------------------------------------------------------------
    def check(self, paths: Iterable[str]) -> dict[str, ImageInfo]:
        """Check every relative path; returns one :class:`ImageInfo` per distinct path."""
        out, todo = self.plan(paths)
        try:
            if todo:
                self.record(todo, self._infos(todo), out)
        finally:  # what the plan read of the signature's rows is this check's alone
            self._stated, self._fresh, self._known_rows = set(), {}, None
        return out

    def plan(self, paths: Iterable[str]) -> tuple[dict[str, ImageInfo], list[tuple[str, tuple[int, int]]]]:
        """:meth:`check` up to the images whose check must be computed: what is known of the
        distinct paths without opening them (outside, missing, remembered), and the rest as
        ``(path, (size, mtime))`` to compute (:meth:`_infos`, or elsewhere with :meth:`spec`
        and :func:`infos_of`) and :meth:`record`."""
        paths = list(dict.fromkeys(paths))
        out: dict[str, ImageInfo] = {}
        if self.contain is not None:
            for p in paths:
                why = self.contain.problem(p)
                if why is not None:
                    out[p] = ImageInfo(p, error=f"outside: {why}")
            if out:
                paths = [p for p in paths if p not in out]
        if not (self.read_size or self.hash):
            listing = self.contain.listing() if self.contain is not None else folder_entries(self.root)
            for p in paths:
                present = p in listing if "/" not in p else (self.root / p).is_file()
                out[p] = ImageInfo(p) if present else ImageInfo(p, error="missing")
            return out, []
        known = self._known_of(paths) if self._header_only() else None
        table = self._load_table().get_many(self._to_look_up(paths, known))
        if known is not None:
            stated = [p for p in paths if _states_size(known.get(p))]
            self._fresh = dict(zip(stated, _hashed_now(self.known, stated), strict=True))
            self._known_rows = known
        todo: list[tuple[str, tuple[int, int]]] = []
        under = _under(self.root)
        for p in paths:
            try:
                st = os.stat(under + p if p[:1] != "/" else p)
            except OSError:
                out[p] = ImageInfo(p, error="missing")
                continue
            sig = (st.st_size, st.st_mtime_ns)
            hit = self._cached(p, table.get(p), sig)
            if hit is not None:
                out[p] = hit
                self.hits += 1
            else:
                todo.append((p, sig))
        return out, todo

    def rows(self, paths: Iterable[str]) -> tuple:
        """A check of ``paths`` as plain data, for another process to make (:func:`check_rows`;
        :meth:`adopt` takes back what it computed): the checker's settings, the distinct paths,
        and where that process finds their rows of the table and of :attr:`known` (an SQLite
        table by its file and name, which it reads itself: the build's process reads none of
        them; or the rows themselves, for a table held in memory) with whether this build's
        folder signature hashed each path."""
        paths = list(dict.fromkeys(paths))
        known = fresh = None
        if self.known is not None and self.hash:
            known, fresh = _rows_at(self.known, paths), _hashed_flags(self.known, paths)
        settings = (str(self.root), self.decode, self.hash, self.read_size, self.contain is not None,
                    self._token)
        return settings, paths, (_rows_at(self._load_table(), paths), known, True if fresh is None else fresh)

    def adopt(self, checked: tuple[dict[str, list], int, int]) -> tuple[int, int]:
        """The rows :func:`check_rows` computed into the table, and its counts of images
        remembered and computed (returned, and added to :attr:`hits` and :attr:`computed`)."""
        rows, hits, computed = checked
        self._load_table().put_many(rows)
        self.hits += hits
        self.computed += computed
        return hits, computed

    def check_given(self, rows: list[tuple[str, Any, Any, bool]]
                    ) -> tuple[dict[str, ImageInfo], tuple[dict[str, list], int, int]]:
        """:meth:`check` of the paths of :meth:`rows` against the table and :attr:`known` rows
        given with them (not this checker's own): each path's info, and what :meth:`adopt`
        takes back. The checker is left with no table and nothing known."""
        table = {p: row for p, row, _k, _f in rows if row is not None}
        self._table = mine = MemoryRows(table)
        self.known = known = _GivenRows({p: k for p, _t, k, _f in rows if k is not None})
        known.fresh = {p: f for p, _t, _k, f in rows}
        hits, computed = self.hits, self.computed
        try:
            out = self.check(p for p, _t, _k, _f in rows)
            new = {p: row for p, row in mine.items() if table.get(p) is not row}
        finally:
            self._table, self.known = None, None
        return out, (new, self.hits - hits, self.computed - computed)

    def record(self, todo: list[tuple[str, tuple[int, int]]], infos: Iterable[ImageInfo],
               out: dict[str, ImageInfo]) -> None:
        """The computed checks of ``todo``, in its order: into ``out`` and the table."""
        rows: dict[str, list] = {}
        stated, fresh = self._stated, self._fresh
        for (p, sig), info in zip(todo, infos, strict=True):
            out[p] = info
            if p in stated:  # its signature row is its check: not kept twice
                if fresh.get(p, True):
                    self.computed += 1
                else:
                    self.hits += 1
                continue
            rows[p] = [sig[0], sig[1], info.width, info.height, info.sha256, info.error, self.decode]
            self.computed += 1
        self._load_table().put_many(rows)

    def _header_only(self) -> bool:
        """Whether a file's signature row, its hash and the size its header states, is the
        whole of its check (one that hashes and reads no more than the header)."""
        return self.hash and self.read_size and not self.decode and self.known is not None

    def _known_of(self, paths: list[str]) -> dict[str, Any]:
        """The signature rows of ``paths`` (:attr:`known`; none when the check does not hash)."""
        return self.known.get_many(paths) if self.known is not None and self.hash else {}

    def _to_look_up(self, paths: list[str], known: dict[str, Any] | None) -> list[str]:
        """The paths whose check the table may hold: for a header-only check, not those whose
        signature row states a header size (that row is their check, and is not kept twice:
        a table of millions of images is not written, nor read, for nothing)."""
        if known is None or not self._header_only():
            return paths
        return [p for p in paths if not _states_size(known.get(p))]

    def _cached(self, rel: str, entry: Any, sig: tuple[int, int]) -> ImageInfo | None:
        if not isinstance(entry, list) or len(entry) != 7 or (entry[0], entry[1]) != sig:
            return None
        _, _, w, h, sha, err, decoded = entry
        if (self.decode and not decoded and not err) or (self.hash and sha is None and not err):
            return None
        return ImageInfo(rel, w, h, sha, err)

    def spec(self, todo: list[tuple[str, tuple[int, int]]]) -> tuple:
        """What computing the checks of ``todo`` needs, as plain data (:func:`infos_of`): the
        check's settings and the hashes ``known`` for their size and mtime."""
        shas: dict[str, tuple[str, tuple[int, int] | None]] = {}
        if self.hash and self.known is not None and todo:
            known = self._known_rows if self._known_rows is not None else \
                self.known.get_many([p for p, _sig in todo])
            for p, (size, mtime) in todo:
                got = file_row_of(known.get(p), size, mtime)
                if got is not None:
                    shas[p] = got
        self._stated = {p for p, got in shas.items() if _stated(p, got, self.read_size, self.decode)}
        return str(self.root), self.decode, self.hash, self.read_size, shas

    def _infos(self, todo: list[tuple[str, tuple[int, int]]]) -> list[ImageInfo]:
        """The checks of ``todo`` (path, (size, mtime)), in order (see :func:`infos_of`)."""
        return infos_of(self.spec(todo), todo, self._computed)

    def _computed(self, todo: list[tuple[str, tuple[int, int]]],
                  job: tuple[str, bool, bool, bool]) -> Iterator[ImageInfo]:
        """The checks of ``todo`` (path, (size, mtime)), in order: in chunks through ``map`` (the
        build's engine, see :meth:`vlitc.ops.base.OpContext.map_chunks`) when there is one and
        enough images; else files of at least :data:`THREAD_MIN_BYTES` (or
        :data:`THREAD_MIN_DECODE` when decoding) on a thread pool and the rest in a plain loop
        here, meanwhile. Every way gives the same infos."""
        rels = [p for p, _ in todo]
        if self.map is not None and len(rels) > MAP_CHUNK:
            chunks = (rels[i : i + MAP_CHUNK] for i in range(0, len(rels), MAP_CHUNK))
            for infos in self.map(check_packed, job, chunks):
                yield from map(ImageInfo.unpacked, infos)
            return
        least = THREAD_MIN_DECODE if job[1] else THREAD_MIN_BYTES
        yield from large_on_threads(rels, [sig[0] for _, sig in todo], least,
                                    lambda rel: compute(job, rel), self.workers)


def large_on_threads(items: list[T], sizes: list[int], least: int, each: Callable[[T], R],
                     threads: int) -> list[R]:
    """``each(item)`` of every item, in order: the items of at least ``least`` bytes on a pool
    of ``threads`` threads, the others one after another here meanwhile (a file's work holds
    the GIL while Python parses, and lets it go to read, hash and decode: threads pay only for
    files whose reading outweighs that). Every way gives the same results."""
    big = [i for i, n in enumerate(sizes) if n >= least]
    if len(big) < 2 or threads < 2:  # nothing to overlap
        return [each(x) for x in items]
    out: list[Any] = [None] * len(items)
    # threads take runs of items (one future per item costs more than a small file's work);
    # the runs keep reads overlapped on slow disks and network folders
    size = max(1, min(THREAD_RUN, len(big) // (4 * threads)))
    runs = [big[i : i + size] for i in range(0, len(big), size)]
    with ThreadPoolExecutor(threads) as pool:
        done = pool.map(lambda run: [each(items[i]) for i in run], runs)
        threaded = set(big)
        for i, x in enumerate(items):
            if i not in threaded:
                out[i] = each(x)
        for run, results in zip(runs, done, strict=True):
            for i, r in zip(run, results, strict=True):
                out[i] = r
    return out


def infos_of(spec: tuple, todo: list[tuple[str, tuple[int, int]]],
             computed: Callable[[list, tuple], Iterable[ImageInfo]] | None = None) -> list[ImageInfo]:
    """The checks of ``todo`` (path, (size, mtime)), in order, as :meth:`ImageChecker.spec`
    describes them: a file whose hash is known is only probed (and not even opened without
    sizes, nor for a header-only check of a JPEG or PNG whose header size the hash's read
    found). ``computed(todo, job)`` checks files (by default one after another, here)."""
    root, decode, hashing, read_size, shas = spec
    run = computed or (lambda items, job: check_chunk(job, [p for p, _ in items]))
    job = (root, decode, hashing, read_size)
    if not shas:
        return list(run(todo, job))
    rest = [t for t in todo if t[0] not in shas]
    out = dict(zip((p for p, _ in rest), run(rest, job), strict=True))
    seen = []
    for t in todo:
        got = shas.get(t[0])
        if got is None:
            continue
        size = _stated(t[0], got, read_size, decode)
        if size is not None:
            out[t[0]] = ImageInfo(t[0], size[0], size[1], got[0])  # what its probe would say
        else:
            seen.append(t)
    probed = run(seen, (root, decode, False, True)) if read_size else (ImageInfo(p) for p, _ in seen)
    for info in probed:
        if info.error is None:  # as a check that hashes: a file that fails has no hash
            info.sha256 = shas[info.path][0]
        out[info.path] = info
    return [out[p] for p, _ in todo]


def _stated(path: str, got: tuple[str, tuple[int, int] | None], read_size: bool,
            decode: bool) -> tuple[int, int] | None:
    """The size a header-only check of ``path`` takes from its signature row ``got`` (hash,
    header size) as :func:`probe` would find it, without opening the file: a JPEG's or PNG's
    stated size within the decompression-bomb limit; ``None`` when the file must be probed."""
    size = got[1] if read_size and not decode else None
    return size if size is not None and _within_limit(size) and _format_of(path) else None


def _states_size(row: Any) -> bool:
    """Whether a signature row has a header size (:func:`file_row`; checked in full where used)."""
    return type(row) is list and len(row) == 5


def _hashed_now(known: Any, names: list[str]) -> list[bool]:
    """For each of ``names``, whether this build's folder signature hashed it
    (:class:`vlitc.run.fingerprint.SignedRows`): true where the table does not say."""
    flags = getattr(known, "hashed_now", None)
    return flags(names) if flags is not None else [True] * len(names)


def _hashed_flags(known: Any, names: list[str]) -> bool | list[bool]:
    """:func:`_hashed_now` of ``names`` as plain data: one answer for all of them where the
    signature hashed every file or none (:class:`vlitc.run.fingerprint.HashedNames`)."""
    hashed = getattr(known, "hashed", None)
    if hashed is None:
        return True
    every = hashed.all_or_none()
    return every if every is not None else hashed.flags(names)


class _GivenRows(MemoryRows):
    """A worker's signature rows, as :meth:`ImageChecker.rows` sent them, with which of them
    the build's signature hashed."""

    fresh: dict[str, bool]

    def hashed_now(self, names: list[str]) -> list[bool]:
        return [self.fresh.get(n, True) for n in names]


def _within_limit(size: tuple[int, int]) -> bool:
    """Whether :func:`probe` takes a header's size as it is (else Pillow opens the file, and
    warns of or refuses a decompression bomb)."""
    from PIL import Image

    return size[0] * size[1] <= (Image.MAX_IMAGE_PIXELS or size[0] * size[1])


def _under(root: str | Path) -> str:
    """``root`` with a trailing separator: ``_under(root) + rel`` is ``os.path.join(root, rel)``
    for a relative ``rel``, for a fraction of its cost in a loop over many images."""
    root = os.fspath(root)
    return root if root.endswith(os.sep) else root + os.sep


def compute(job: tuple[str, bool, bool, bool], rel: str) -> ImageInfo:
    """One image's check: ``job`` is (root, decode, hash, read_size) as in :class:`ImageChecker`."""
    root, decode, hashing, read_size = job
    path = os.path.join(root, rel)
    info = ImageInfo(rel)
    try:
        if read_size:
            info.width, info.height = probe(path, decode)
        if hashing:
            info.sha256 = sha256_file(path)
    except FileNotFoundError:
        info.error = "missing"
    except Exception as e:  # Pillow raises many types for a bad file
        info.error = f"corrupt: {type(e).__name__}: {e}"
    return info


#: the checkers a worker process keeps between runs, by their settings (a checker's
#: containment lists its folder once)
_WORKER_CHECKERS: dict[tuple, ImageChecker] = step_cache()  # the step's: a listing is large


def check_rows(spec: tuple) -> tuple[dict[str, ImageInfo], tuple[dict[str, list], int, int]]:
    """:meth:`ImageChecker.check` of what :meth:`ImageChecker.rows` describes, in the process
    that builds the records: each path's info, and what :meth:`ImageChecker.adopt` takes back
    (the table's rows computed here, and the counts). The same infos as the check there. The
    rows of the paths are read here, from the build's tables (their SQLite files, in WAL: the
    build's process may add rows meanwhile, of other images)."""
    settings, paths, (table_at, known_at, fresh) = spec
    checker = _WORKER_CHECKERS.get(settings)
    if checker is None:
        root, decode, hashing, read_size, contain, _token = settings
        checker = ImageChecker(Path(root), decode=decode, hash=hashing, read_size=read_size,
                               contain=contain)
        if len(_WORKER_CHECKERS) >= 4:
            _WORKER_CHECKERS.clear()
        _WORKER_CHECKERS[settings] = checker
    known = _rows_in(known_at, paths) if known_at is not None else {}
    header_only = checker.hash and checker.read_size and not checker.decode and known_at is not None
    look_up = [p for p in paths if not _states_size(known.get(p))] if header_only else paths
    table = _rows_in(table_at, look_up)
    flags = fresh if isinstance(fresh, list) else [fresh] * len(paths)
    return checker.check_given([(p, table.get(p), known.get(p), f) for p, f in zip(paths, flags, strict=True)])


#: the build's row stores a worker process reads the rows of its images' checks from, by file
_WORKER_TABLES: dict[str, Any] = step_cache()


def _rows_at(rows: Rows, paths: list[str]) -> tuple:
    """Where another process finds the rows of ``paths`` in ``rows`` (:func:`_rows_in`): an
    SQLite table by its file and name, else the rows themselves."""
    if isinstance(rows, SQLiteRows):
        return "table", str(rows.store.path), rows.key
    return "rows", rows.get_many(paths)


def _rows_in(at: tuple, paths: list[str]) -> dict[str, Any]:
    """The rows of ``paths`` from where :func:`_rows_at` said (rows given: those it holds)."""
    if at[0] == "rows":
        return at[1]
    _kind, path, key = at
    store = _WORKER_TABLES.get(path)
    if store is None:
        store = _WORKER_TABLES[path] = RowStore(Path(path))
    return store.table(key).get_many(paths)


def check_chunk(job: tuple[str, bool, bool, bool], rels: list[str]) -> list[ImageInfo]:
    """The checks of a chunk of images."""
    return [compute(job, rel) for rel in rels]


def check_packed(job: tuple[str, bool, bool, bool], rels: list[str]) -> list[tuple]:
    """:func:`check_chunk` in one worker (a shard function of the engine), packed to travel."""
    return [compute(job, rel).packed() for rel in rels]


