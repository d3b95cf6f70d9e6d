"""Shared machinery of the source loaders: reading annotation files with located errors,
schema fragments, split/sample/limit selection, box fitting, issue reporting and image checks.

A loader subclasses :class:`AnnotationSource` and implements two methods:

* ``entries(ctx, issues) -> list[Entry]``: parse the annotation files into one light entry per
  image (the record id, the image path under the ``images`` root, the annotated size and a
  payload of raw annotations, grouped but not yet converted);
* ``layers(payload, width, height, issues) -> dict``: turn one payload into record layers.

The base class selects entries (split, seeded sample, limit) *before* any image is touched or
any layer is built, so a small sample of a large dataset checks and converts only what it yields.
"""

from __future__ import annotations

import collections
import gc
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, cast

from vlitc import boxes
from vlitc.errors import InputError, Location
from vlitc.images import ImageInfo, check_rows
from vlitc.ops.base import OpContext, Source, cycle_collector_off
from vlitc.records import Record, image_record, image_value
from vlitc.run.heap import step_cache

#: how many examples of each counted issue are kept for the report
EXAMPLES = 5
#: how many skipped image paths are listed in the report
SKIPPED_LIST = 1000
#: entries read, checked and turned into records at a time by a loader that streams its file
STREAM_BATCH = 20_000
#: entries a worker builds into records per task (a loader that builds records apart)
BUILD_RUN = 5_000

BOX_FORMATS = ("xyxy", "xywh", "normalized", "thousand", "square_padded")

# ---------------------------------------------------------------------------------------------
# schema fragments


def schema(props: dict, required: tuple[str, ...] = (), any_of: tuple[str, ...] = ()) -> dict:
    """A strict params schema; ``any_of`` names params of which at least one is required."""
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if any_of:
        out["anyOf"] = [{"required": [k]} for k in any_of]
    return out


FILE = {"type": "string", "minLength": 1}
FILES = {"oneOf": [FILE, {"type": "array", "items": FILE, "minItems": 1}]}

SAMPLING = {
    "limit": {"type": "integer", "minimum": 0,
              "description": "keep at most this many records (after split and sample)"},
    "sample": {"type": "integer", "minimum": 1,
               "description": "a seeded random sample of this many records, in file order"},
}
SPLIT = {
    "split": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
              "description": "keep only items of this split (or these splits)"},
}
IMAGES = {
    "images": {"type": "string", "minLength": 1, "description": "folder the image paths are under"},
    "on_missing_image": {"enum": ["skip", "error"], "default": "skip",
                         "description": "a missing or corrupt image: skip the record, or fail"},
    "check_images": {"type": "boolean", "default": True,
                     "description": "decode every image with Pillow (off: read headers only)"},
    "hash_images": {"type": "boolean", "default": True,
                    "description": "sha256 of every image (remembered by path, size, mtime)"},
    "images_outside": {"type": "boolean", "default": False,
                       "description": "allow image paths that lead outside the images folder "
                                      "(absolute, '..' or a symlink out); off: such a path is an "
                                      "error"},
}


# ---------------------------------------------------------------------------------------------
# reading files


def resolve_file(ctx: OpContext, value: str, param: str) -> Path:
    """A file param resolved against the recipe folder; a missing file is a located error."""
    path = ctx.resolve(value)
    if not path.is_file():
        raise InputError(f"{param}: file not found", Location(str(path)),
                         hint=f"check the '{param}' path (relative paths start at the recipe folder)")
    return path


def file_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _decode_error(path: Path, e: json.JSONDecodeError) -> InputError:
    msg = e.msg.split(": line ")[0]
    return InputError(f"malformed JSON: {msg}", Location(str(path), e.lineno, e.colno),
                      hint="the file must be valid JSON in the dataset's published format")


def read_json(path: Path, drop: tuple[str, ...] = ()) -> Any:
    """Parse a JSON file; a syntax error becomes an :class:`InputError` at its line and column.

    ``drop`` names object keys discarded while parsing (e.g. COCO ``segmentation`` polygons), so
    they never accumulate in memory (a file that never names them is read as any other).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", Location(str(path))) from None
    try:
        return _loads(data, drop, bool(drop) and any(b'"%s"' % k.encode() in data for k in drop))
    except json.JSONDecodeError as e:  # orjson.JSONDecodeError is a subclass
        raise _decode_error(path, e) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text: {e.reason} at byte {e.start}", Location(str(path))) from None


def _loads(data: bytes, drop: tuple[str, ...], named: bool) -> Any:
    """:func:`read_json`'s parse of ``data`` (``named``: the file names a ``drop`` key)."""
    import orjson

    if drop and not named:
        # nothing to drop (a COCO captions file): orjson reads it; what orjson refuses is
        # read below, as before, for the same value or the same located error
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    if drop:
        keys = drop

        def hook(d: dict) -> dict:
            for k in keys:
                if k in d:
                    del d[k]
            return d

        if _SURROGATE_ESCAPE.search(data):  # the json module keeps lone surrogates: refuse
            orjson.loads(data)
        return json.loads(data, object_hook=hook, parse_constant=_not_json, parse_float=_finite)
    return orjson.loads(data)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _not_json(name: str) -> Any:
    """``NaN``, ``Infinity``: Python's json module reads them, JSON (and orjson) does not."""
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _finite(text: str) -> float:
    """A JSON number as orjson reads it: one too large for a double (``1e999``) is an error."""
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number {text} is infinity when parsed as double", text, 0)
    return value


def iter_jsonl(path: Path, raw: bool = False) -> Iterator[tuple]:
    """``(line number, value)`` for each non-blank line of a JSON Lines file (``raw``: and the
    line's bytes); located errors."""
    import orjson

    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield (lineno, orjson.loads(line), line) if raw else (lineno, orjson.loads(line))
            except orjson.JSONDecodeError as e:
                raise InputError(f"malformed JSON line: {e.msg.split(': line ')[0]}",
                                 Location(str(path), lineno, e.colno)) from None


def read_parquet(path: Path) -> list[tuple[int, Any]]:
    """The rows of a Parquet file (a Hugging Face dataset's shard, vlitc's own export) as
    ``(row number, dict)``; a file pyarrow cannot read is a located error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read as Parquet: {e}", Location(str(path)),
                         hint="the file must be a Parquet file (e.g. a datasets shard)") from None
    return [(i + 1, row) for i, row in enumerate(rows)]


def read_items(path: Path, keys: tuple[str, ...] = ("data",)) -> list[tuple[int, Any]]:
    """A list of items from a JSON array, a JSON object holding one under ``keys``, JSON Lines
    (whatever the file's extension: POPE ships JSON Lines as ``.json``) or a Parquet file.

    Items come as ``(line, item)``; line is 0 (unknown) for items of a whole-file JSON document
    and the row number for Parquet rows.
    """
    if path.suffix.lower() == ".parquet":
        return read_parquet(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(iter_jsonl(path))
    try:
        data = read_json(path)
    except InputError:
        if _first_line_is_object(path):
            return list(iter_jsonl(path))
        raise
    if isinstance(data, dict):
        for k in keys:
            if isinstance(data.get(k), list):
                return [(0, x) for x in data[k]]
        raise InputError(f"expected a JSON array (or an object with {' or '.join(keys)!r})",
                         Location(str(path), 1, 1))
    if not isinstance(data, list):
        raise InputError("expected a JSON array of items", Location(str(path), 1, 1))
    return [(0, x) for x in data]


def iter_items(path: Path, keys: tuple[str, ...] = ("data",), raw: bool = False) -> Iterator[tuple]:
    """The items of :func:`read_items`, one at a time, never the whole file at once: a JSON
    array is read element by element (:func:`iter_json_array`), JSON Lines line by line and
    Parquet by row batches. A JSON document that is not an array (an object holding the list)
    is read whole, as :func:`read_items` reads it. ``raw``: each item also comes with the JSON
    text it was parsed from (``None`` for Parquet rows and documents read whole)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from iter_jsonl(path, raw)
    elif suffix != ".parquet" and _first_byte(path) == b"[":
        if raw:
            yield from ((0, x, text) for x, text in iter_json_array(path, raw=True))
        else:
            yield from ((0, x) for x in iter_json_array(path))
    else:
        rows = _iter_parquet(path) if suffix == ".parquet" else read_items(path, keys)
        yield from ((line, x, None) for line, x in rows) if raw else rows


def _first_byte(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 16):
                if stripped := block.lstrip():
                    return stripped[:1]
    except OSError:
        pass
    return b""


def _iter_parquet(path: Path, batch: int = 10_000) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = 0
        for b in pq.ParquetFile(path).iter_batches(batch_size=batch):
            for row in b.to_pylist():
                rows += 1
                yield rows, row
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read as Parquet: {e}", Location(str(path)),
                         hint="the file must be a Parquet file (e.g. a datasets shard)") from None


_NOT_WS = re.compile(rb"[^ \t\r\n]")
#: bytes an array element can start with (whitespace, ``]`` and the end are checked in full)
_PLAIN_START = frozenset(bytes([c]) for c in b'{["-0123456789tfn')


class _ArrayReader:
    """The elements of a JSON array file, read in blocks: an element written on one line of its
    own (vlitc's exports, most JSON Lines-like arrays) is one ``orjson.loads`` of that line; any
    other layout (pretty-printed, several per line, one giant line) is found with the standard
    library's ``raw_decode`` on a window that grows until the element fits, then parsed by orjson
    (so both paths accept exactly what orjson accepts)."""

    BLOCK = 1 << 22
    LINE = 1 << 24  # longest line tried as one element

    def __init__(self, f: Any):
        self.f, self.buf, self.pos, self.eof = f, b"", 0, False
        self.raw = b""  # the JSON text of the last element read

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.f.read(self.BLOCK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + block
        self.pos = 0
        return True

    def next_byte(self) -> bytes:
        """The next byte that is not whitespace (``b""`` at the end), not consumed."""
        while True:
            m = _NOT_WS.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return self.buf[self.pos:self.pos + 1]
            self.pos = len(self.buf)
            if not self.more():
                return b""

    def element(self) -> tuple[Any, bool]:
        """The element at ``pos`` and whether the comma after it was consumed; ``None`` for an
        element that is not valid JSON."""
        import orjson

        nl = self.buf.find(b"\n", self.pos)
        while nl < 0 and len(self.buf) - self.pos < self.LINE and self.more():
            nl = self.buf.find(b"\n", self.pos)
        if nl >= 0:
            line = self.buf[self.pos:nl].rstrip()
            comma = line.endswith(b",")
            text = line[:-1] if comma else line
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
            else:
                self.pos = nl + 1
                self.raw = text
                return value, comma
        return self._found(), False

    def _found(self) -> Any:
        import codecs

        import orjson

        decoder = json.JSONDecoder()
        size = 1 << 16
        while True:
            while len(self.buf) - self.pos < size and self.more():
                pass
            window = self.buf[self.pos:self.pos + size]
            whole = self.eof and self.pos + size >= len(self.buf)
            text, _ = codecs.utf_8_decode(window, "strict", whole)
            try:
                _, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                end = None
            if end is None or (end == len(text) and not whole):  # maybe cut short: look further
                if whole:
                    raise ValueError("not a JSON value")
                size *= 2
                continue
            n = len(text[:end].encode("utf-8"))
            self.raw = window[:n]
            value = orjson.loads(self.raw)
            self.pos += n
            return value


def iter_json_array(path: Path, raw: bool = False) -> Iterator[Any]:
    """The elements of the JSON array in ``path``, one by one (memory: one element, plus a block
    of the file); ``raw``: each as ``(value, its JSON text)``. Anything malformed is reported as
    :func:`read_json` reports it (file, line and column), after the elements before it were
    given out."""
    try:
        with open(path, "rb") as f:
            r = _ArrayReader(f)
            if r.next_byte() != b"[":
                raise ValueError("not a JSON array")
            r.pos += 1
            if r.next_byte() == b"]":
                r.pos += 1
            else:
                while True:
                    value, comma = r.element()
                    yield (value, r.raw) if raw else value
                    if not comma:
                        nxt = r.next_byte()
                        r.pos += 1
                        if nxt == b"]":
                            break
                        if nxt != b",":
                            raise ValueError("expected ',' or ']'")
                    if r.buf[r.pos:r.pos + 1] in _PLAIN_START:  # the next element starts here
                        continue
                    if r.next_byte() in (b"]", b""):
                        raise ValueError("expected a value")
            if r.next_byte() != b"":
                raise ValueError("data after the array")
    except (ValueError, UnicodeDecodeError, OSError):
        read_json(path)  # raises the located error the whole file gives
        raise InputError("malformed JSON", Location(str(path))) from None


class Irregular(Exception):
    """A JSON file that :func:`iter_members` does not read in blocks (not an object, a repeated
    member, an array it cannot cut, anything malformed): its reader reads it whole instead."""


_KEY = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
#: bytes of one block of a streamed array; an element longer than MAX_WINDOW is read whole
MEMBER_BLOCK = 1 << 22
MAX_WINDOW = 1 << 26
#: cuts tried in one window before it grows (a cut inside a string fails to parse)
CUT_TRIES = 8


def names_key(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether the file holds one of ``keys`` as a JSON string, searched in blocks of
    :data:`MEMBER_BLOCK` (a search through a memory map of a 1 GB file that lacks them would
    count the whole file in the build's resident memory)."""
    needles = [b'"%s"' % k.encode() for k in keys]
    keep = max((len(n) for n in needles), default=1) - 1  # a name across two blocks
    with open(path, "rb") as f:
        tail = b""
        while block := f.read(MEMBER_BLOCK):
            data = tail + block
            if any(n in data for n in needles):
                return True
            tail = data[len(data) - keep:]
    return False


class _MemberReader(_ArrayReader):
    """The members of a top-level JSON object, arrays named by the caller in blocks of elements."""

    BLOCK = MEMBER_BLOCK

    def __init__(self, f: Any, drop: tuple[str, ...], named: bool):
        super().__init__(f)
        self.drop, self.named = drop, named

    def loads(self, data: bytes) -> Any:
        try:
            return _loads(data, self.drop, self.named)
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            raise Irregular from None

    def closed(self, close: bytes) -> bool:
        """After a member or an element: whether ``close`` ends its container (else a comma)."""
        nxt = self.next_byte()
        self.pos += 1
        if nxt != close and nxt != b",":
            raise Irregular
        return nxt == close

    def expect(self, byte: bytes) -> None:
        if self.next_byte() != byte:
            raise Irregular
        self.pos += 1

    def key(self) -> str:
        self.next_byte()
        while True:
            m = _KEY.match(self.buf, self.pos)
            if m is not None and m.end() < len(self.buf):
                break
            if len(self.buf) - self.pos > self.LINE or not self.more():
                raise Irregular
        self.pos = m.end()
        key = self.loads(m.group())
        self.expect(b":")
        return cast(str, key)

    def value(self) -> Any:
        """One whole value at ``pos`` (found as :class:`_ArrayReader` finds an element)."""
        self.next_byte()
        try:
            self._found()
        except (ValueError, UnicodeDecodeError):
            raise Irregular from None
        return self.loads(self.raw)

    def elements(self) -> Iterator[list]:
        """The elements of the array at ``pos``, a block's worth at a time: the block is cut
        after a ``}`` followed by ``,`` or ``]`` and parsed as an array; a cut inside a string
        or a nested value does not parse (the text before it leaves a string or a bracket
        open), so a parsed block always ends on an element of this array."""
        self.expect(b"[")
        if self.next_byte() == b"]":
            self.pos += 1
            yield []
            return
        while True:
            size = self.BLOCK
            while True:
                while len(self.buf) - self.pos < size and self.more():
                    pass
                got = self._cut(size)
                if got is not None:
                    break
                if size >= MAX_WINDOW or (self.eof and self.pos + size >= len(self.buf)):
                    raise Irregular
                size *= 2
            values, end = got
            yield values
            self.pos = end
            if self.closed(b"]"):
                return

    def _cut(self, size: int) -> tuple[list, int] | None:
        """The elements of the next block and where it ends, or ``None`` when no cut in the
        window parses. A cut that does not parse tells where its text went wrong: cuts before
        that are tried next, and a block that closed the array there (text after the array's
        ``]``) is the array's last."""
        import orjson

        buf, lo = self.buf, self.pos
        hi = min(len(buf), lo + size)
        for _ in range(CUT_TRIES):
            cut = buf.rfind(b"}", lo, hi)
            if cut < 0:
                return None
            text = b"[" + buf[lo:cut + 1] + b"]"
            try:
                values, end = orjson.loads(text), cut + 1
            except orjson.JSONDecodeError as e:
                at = _byte_pos(text, e.pos)
                if at is None:
                    return None
                try:  # the array ended before the cut: the text up to there is all of it
                    values, end = orjson.loads(text[:at]), lo + at - 2
                except orjson.JSONDecodeError:
                    hi = min(cut, lo + at - 1)
                    continue
                if text[at - 1:at] != b"]":
                    return None
            if not isinstance(values, list) or not values:  # a block holds an element at least
                return None
            if self.named:  # the values as read_json gives them (the dropped keys left out)
                values = self.loads(b"[" + buf[lo:end] + b"]")
            return values, end
        return None


def _byte_pos(text: bytes, pos: int) -> int | None:
    """The byte offset of character ``pos`` of UTF-8 ``text`` (``None``: not UTF-8)."""
    if text.isascii():
        return pos
    try:
        return len(text.decode("utf-8")[:pos].encode("utf-8"))
    except UnicodeDecodeError:
        return None


def iter_members(path: Path, arrays: tuple[str, ...], drop: tuple[str, ...] = ()) -> Iterator[tuple[str, Any, bool]]:
    """The members of the JSON object in ``path`` in file order, as ``(key, value, False)``; a
    member named in ``arrays`` whose value is an array comes as ``(key, elements, True)`` for
    each block of its elements, so the file is never in memory whole. Values are those
    :func:`read_json` gives (``drop`` too). Raises :class:`Irregular` (maybe after some members)
    for anything it does not read so: the caller then reads the file with :func:`read_json`,
    which gives the same values or the located error."""
    seen: set[str] = set()
    try:
        named = bool(drop) and names_key(path, drop)
        with open(path, "rb") as f:
            r = _MemberReader(f, drop, named)
            r.expect(b"{")
            if r.next_byte() == b"}":
                r.pos += 1
            else:
                while True:
                    key = r.key()
                    if key in seen:  # the last one counts: read whole
                        raise Irregular
                    seen.add(key)
                    if key in arrays and r.next_byte() == b"[":
                        for values in r.elements():
                            yield key, values, True
                    else:
                        yield key, r.value(), False
                    if r.closed(b"}"):
                        break
            if r.next_byte() != b"":
                raise Irregular
    except OSError:
        raise Irregular from None


def _first_line_is_object(path: Path) -> bool:
    import orjson

    with open(path, "rb") as f:
        line = f.readline()
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def need(obj: Any, key: str, path: Path, kind: type | tuple = list) -> Any:
    """``obj[key]`` of the expected type, or a located error naming the missing field."""
    val = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(val, kind):
        raise InputError(f"no {key!r} field of the expected type; is this the right file?",
                         Location(str(path)),
                         hint="each file param must point at the dataset's published file")
    return val


# ---------------------------------------------------------------------------------------------
# issues


class Issues:
    """Counts annotation problems (``ctx.count``) and keeps a few examples (``ctx.note``)."""

    def __init__(self, ctx: OpContext):
        self.ctx = ctx
        self.examples: dict[str, list] = {}
        self.skipped: list[str] = []

    def add(self, kind: str, example: Any = None) -> None:
        self.ctx.count(kind)
        ex = self.examples.setdefault(kind, [])
        if example is not None and len(ex) < EXAMPLES:
            ex.append(example)

    def skip_image(self, kind: str, path: str) -> None:
        self.add(kind, path)
        self.ctx.count("skipped_images")
        if len(self.skipped) < SKIPPED_LIST:
            self.skipped.append(path)

    def merge(self, counters: dict[str, int], examples: dict[str, list], skipped: list[str]) -> None:
        """Add what another process counted (records built in a worker), in order."""
        for kind, n in counters.items():
            self.ctx.count(kind, n)
        for kind, ex in examples.items():
            mine = self.examples.setdefault(kind, [])
            mine.extend(ex[:EXAMPLES - len(mine)])
        self.skipped.extend(skipped[:SKIPPED_LIST - len(self.skipped)])

    def close(self) -> None:
        for kind, ex in self.examples.items():
            self.ctx.note(kind, {"count": self.ctx.counters.get(kind, 0), "examples": ex})
        if self.skipped:
            self.ctx.note("skipped_images", self.skipped)


# ---------------------------------------------------------------------------------------------
# boxes and ids

_DIGITS = re.compile(r"(\d+)\.\w+$")


def coco_id(file_name: str) -> str | None:
    """The image id in a COCO-style file name (``COCO_val2014_000000039769.jpg`` -> ``39769``)."""
    m = _DIGITS.search(file_name)
    return str(int(m.group(1))) if m else None


def to_pixels(raw: Any, fmt: str, width: Any, height: Any) -> list[float] | None:
    """A box in a dataset's own ``fmt`` as canonical pixels; ``None`` when it cannot be read."""
    try:
        b = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None
    if len(b) != 4 or not all(math.isfinite(v) for v in b):
        return None
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return boxes.from_xywh(b)
    if not width or not height:
        return None
    if fmt == "normalized":
        return boxes.from_normalized(b, width, height)
    if fmt == "thousand":
        return boxes.from_thousand(b, width, height)
    return boxes.from_square_padded_normalized(b, width, height)


def fit_box(b: list[float] | None, width: Any, height: Any, issues: Issues, what: Any) -> list | None:
    """Round a pixel box to 2 decimals; clip (and count) one outside its image; drop empty ones."""
    if b is None:
        issues.add("unreadable_box", what)
        return None
    b = [round(b[0], 2), round(b[1], 2), round(b[2], 2), round(b[3], 2)]
    if width and height and not boxes.inside(b, width, height):
        issues.add("box_outside_image", what)
        b = [round(float(v), 2) for v in boxes.clip(b, width, height)]
    if b[2] <= b[0] or b[3] <= b[1]:
        issues.add("empty_box", what)
        return None
    return b


# ---------------------------------------------------------------------------------------------
# the loader base


class Entry(NamedTuple):
    """One image of a dataset before selection: id, image path (a tuple of paths for a record
    with several images), annotated size, raw payload."""

    rid: str
    path: str | tuple[str, ...] | None
    width: int | None
    height: int | None
    data: Any
    split: str | None = None


def select(entries: list[Entry], params: dict, seed: int, label: str) -> list[Entry]:
    """Apply ``split``, then a seeded ``sample`` (keeping file order), then ``limit``."""
    split = params.get("split")
    if split:
        wanted = {split} if isinstance(split, str) else set(split)
        entries = [e for e in entries if e.split in wanted]
    k = params.get("sample")
    if k and k < len(entries):
        rng = random.Random(f"{seed}:{label}:sample")
        entries = [entries[i] for i in sorted(rng.sample(range(len(entries)), k))]
    n = params.get("limit")
    if n is not None:
        entries = entries[:n]
    return entries


def image_store(ctx: OpContext) -> Any:
    """The persistent image-check tables of the run (:class:`vlitc.rows.RowStore`), or ``None``
    outside a run."""
    try:
        return ctx.row_store("image-hash")
    except RuntimeError:
        return None


#: what reading a malformed item of a dataset file raises (a string where a mapping belongs...)
_SHAPE_ERRORS = (TypeError, KeyError, AttributeError, IndexError, ValueError)


class AnnotationSource(Source):
    """Base of the dataset loaders: selection, image checks and record assembly."""

    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ("id", "image")
    image_folder_param: ClassVar[str | None] = "images"
    #: each record is built from its entry and its images alone (``layers`` reads nothing that
    #: ``entries`` kept on the loader), so runs of entries may be built in other processes
    builds_apart: ClassVar[bool] = False

    def entries(self, ctx: OpContext, issues: Issues) -> list[Entry]:
        raise NotImplementedError

    def layers(self, data: Any, width: Any, height: Any, issues: Issues) -> dict:
        raise NotImplementedError

    def path(self, ctx: OpContext, param: str) -> Path:
        path = resolve_file(ctx, self.params[param], param)
        self._reading: Path | None = path  # a malformed item found while parsing is located in this file
        return path

    def stream_entries(self, ctx: OpContext, issues: Issues) -> Iterator[Entry] | None:
        """The entries one at a time, in file order, as the file is read (``None``: this loader,
        with these params, needs every entry at once, e.g. to group items by image). Only
        ``split`` and ``limit`` apply to a stream; ``sample`` needs every entry."""
        return None

    def _stream(self, ctx: OpContext, issues: Issues) -> Iterator[Entry] | None:
        if self.params.get("sample"):
            return None
        entries = self.stream_entries(ctx, issues)
        if entries is None:
            return None
        split = self.params.get("split")
        if split:
            wanted = {split} if isinstance(split, str) else set(split)
            entries = (e for e in entries if e.split in wanted)
        n = self.params.get("limit")
        return entries if n is None else itertools.islice(entries, n)

    def load(self, ctx: OpContext) -> Iterator[Record]:
        return self._load(ctx, self._records_of)

    def load_lines(self, ctx: OpContext) -> Iterator[tuple[bytes, int]]:
        """The records as the cache stores them (JSON lines), in blocks: built in the build's
        workers when the engine spreads work and this loader builds each record from its entry
        alone (:attr:`builds_apart`), else here."""
        if ctx.parallel and self.builds_apart:
            return self._load(ctx, self._lines_apart)
        return super().load_lines(ctx)

    def pack(self, entries: list[Entry]) -> Any:
        """Entries as they travel to the process that builds their records (:meth:`unpack`
        gives them back)."""
        return entries

    def unpack(self, packed: Any) -> list[Entry]:
        return cast(list[Entry], packed)

    def _records_of(self, batches: Iterator[tuple[list[Entry], int]], ctx: OpContext,
                    issues: Issues, checker: Any) -> Iterator[Record]:
        for batch, done in batches:
            yield from self._records(batch, ctx, issues, checker, done)

    def _lines_apart(self, batches: Iterator[tuple[list[Entry], int]], ctx: OpContext,
                     issues: Issues, checker: Any) -> Iterator[tuple[bytes, int]]:
        """Images are checked here (one table of known images), records built in the workers
        from runs of entries and the image infos they need; their issues add up in order."""
        first = next(batches, None)
        if first is None:
            return
        if len(first[0]) < BUILD_RUN:  # the only batch (others are bigger): built here
            yield from Source.load_lines_of(self._records_of(iter([first]), ctx, issues, checker))
            return
        batches = itertools.chain([first], batches)
        root = checker.root if checker is not None else None
        job = BuildJob(self.name, self.params, self.label, ctx.seed, str(ctx.recipe_dir),
                       ctx.recipe, str(root) if root is not None else None)

        # runs whose images are checked where their records are built: what is left to
        # compute, recorded into the table here as the runs come back, in order
        pending: collections.deque = collections.deque()

        def runs() -> Iterator[tuple[Any, dict, Any, int]]:
            for batch, done in batches:
                if checker is not None and _distinct_paths(batch):
                    yield from self._checked_runs(batch, done, checker, ctx, pending)
                    continue
                infos = self._check(checker, batch, ctx) if checker is not None else {}
                for i in range(0, len(batch), BUILD_RUN):
                    run = batch[i:i + BUILD_RUN]
                    pending.append(None)
                    yield (self.pack(run), {p: infos[p].packed() for e in run for p in paths_of(e.path)
                                            if p in infos}, None, done + i)

        total = 0
        for res in ctx.map_chunks(build_run, job, runs()):
            if res.error is None and pending.popleft() is not None:
                hits, computed = checker.adopt(res.checked)
                ctx.count("images_remembered", hits)
                ctx.count("images_hashed", computed)
            issues.merge(res.counters, res.examples, res.skipped)
            if res.error is not None:
                raise InputError(res.error)
            total += res.count
            ctx.emit({"event": "progress", "step": ctx.step_id, "done": total})
            yield res.lines, res.count

    def _checked_runs(self, batch: list[Entry], done: int, checker: Any, ctx: OpContext,
                      pending: collections.deque) -> Iterator[tuple[Any, dict, Any, int]]:
        """Runs of a batch whose image paths are distinct, each with its images' check as plain
        data (:meth:`vlitc.images.ImageChecker.rows`): the worker that builds a run's records
        checks its images (stat, containment, the table's and the folder signature's rows)
        and sends back what the table takes (counted as :meth:`_check` counts them)."""
        if not all(e.width and e.height for e in batch):  # sizes the files do not give
            checker.read_size = True
        ctx.count("images_hashed", 0)
        ctx.count("images_remembered", 0)
        for i in range(0, len(batch), BUILD_RUN):
            run = batch[i:i + BUILD_RUN]
            pending.append(True)
            yield self.pack(run), {}, checker.rows(p for e in run for p in paths_of(e.path)), done + i

    def _load(self, ctx: OpContext, build: Callable[..., Iterator[Any]]) -> Iterator[Any]:
        """Read the entries (streamed in batches, or all at once) and ``build`` what the step
        stores from them, with located errors for entries of the wrong shape."""
        issues = Issues(ctx)
        frozen = False
        try:
            self._reading = None
            stream = self._stream(ctx, issues)
            if stream is not None:  # read as the records are built: one batch in memory
                checker = self._checker(ctx)
                try:
                    with cycle_collector_off():
                        yield from build(_batches(stream), ctx, issues, checker)
                except _SHAPE_ERRORS as e:
                    raise self._shape_error(ctx, e, self._reading) from None
                return
            # Parsing makes millions of acyclic containers: the cycle collector would traverse
            # them again and again for nothing. Parse with it off, then freeze what was parsed
            # so that collections while records are built skip it.
            enabled = gc.isenabled()
            gc.disable()
            try:
                entries = select(self.entries(ctx, issues), self.params, ctx.seed, self.label)
            except _SHAPE_ERRORS as e:
                raise self._shape_error(ctx, e, self._reading) from None
            finally:
                if enabled:
                    gc.enable()
            gc.freeze()
            frozen = True
            try:
                checker = self._checker(ctx)
                yield from build(iter([(entries, 0)]), ctx, issues, checker)
            except _SHAPE_ERRORS as e:
                raise self._shape_error(ctx, e) from None
        finally:
            if frozen:
                gc.unfreeze()
            issues.close()

    def count(self, ctx: OpContext, inputs: list[int]) -> int | None:
        """Entries after ``split``, ``sample`` and ``limit``, from the annotation files alone
        (images missing on disk are not subtracted: an upper bound)."""
        probe = OpContext(seed=ctx.seed, recipe_dir=ctx.recipe_dir, recipe=ctx.recipe)
        stream = self._stream(probe, Issues(probe))
        if stream is not None:
            return sum(1 for _ in stream)
        return len(select(self.entries(probe, Issues(probe)), self.params, ctx.seed, self.label))

    def image_root(self, ctx: OpContext) -> Path | None:
        folder = self.image_folder()
        if not folder:
            return None
        root = ctx.image_roots.get(self.label) or ctx.resolve(folder)
        if not Path(root).is_dir():
            raise InputError("images: folder not found", Location(str(root)),
                             hint="'images' names the folder the dataset's image paths are under")
        return Path(root)

    def _annotation_file(self, ctx: OpContext) -> str | None:
        files = [self.params[k] for k in self.file_params if isinstance(self.params.get(k), str)]
        return str(ctx.resolve(files[0])) if files else None

    def _shape_error(self, ctx: OpContext, e: Exception, file: Path | None = None) -> InputError:
        """A dataset file whose items are not of the published shape (an annotation that is a
        string, an image without an id...): a located error, never a crash."""
        where = str(file) if file is not None else self._annotation_file(ctx)
        what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return InputError(f"an entry is not in the dataset's published shape ({what})",
                          Location(where) if where else None,
                          hint=f"check the files of source {self.label!r} against the {self.name} "
                               "format")

    def _outside_error(self, ctx: OpContext, e: Entry, root: Path, why: str) -> InputError:
        """A dataset's image path that leaves the images folder: located at the annotation file."""
        file = self._annotation_file(ctx)
        where = Location(file) if file else Location(str(root))
        return InputError(f"record {e.rid!r}: image {e.path!r}: {why} ({root})", where,
                          hint="image paths are read under the source's 'images' folder; set "
                               "images_outside: true on the source if the recipe means it")

    def _checker(self, ctx: OpContext) -> Any:
        """The image checker of one load (``None`` without an image folder): each batch reads
        the rows of its images in the table of known images, and writes those it computed."""
        from vlitc.images import ImageChecker

        root = self.image_root(ctx)
        if root is None:
            return None
        decode = self.params["check_images"]
        hashing = self.params["hash_images"]
        return ImageChecker(root, image_store(ctx), decode=decode, hash=hashing,
                            read_size=decode or hashing,
                            contain=not self.params["images_outside"],
                            map=ctx.map_chunks if ctx.parallel else None,
                            known=ctx.known_file_hashes(root) if hashing else None)

    def _check(self, checker: Any, entries: list[Entry], ctx: OpContext) -> dict:
        if not all(e.width and e.height for e in entries):  # sizes the files do not give
            checker.read_size = True
        hits, computed = checker.hits, checker.computed
        infos = checker.check(p for e in entries for p in paths_of(e.path))
        ctx.count("images_hashed", checker.computed - computed)
        ctx.count("images_remembered", checker.hits - hits)
        return cast(dict, infos)

    def _records(self, entries: list[Entry], ctx: OpContext, issues: Issues, checker: Any,
                 done: int = 0) -> Iterator[Record]:
        root = checker.root if checker is not None else None
        infos = self._check(checker, entries, ctx) if checker is not None else {}
        return self._build(entries, ctx, issues, root, infos, done)

    def _build(self, entries: list[Entry], ctx: OpContext, issues: Issues, root: Path | None,
               infos: dict, done: int = 0) -> Iterator[Record]:
        """The records of checked entries (``infos``: what is known of each image path)."""
        total = len(entries) if not done else None
        for i, e in enumerate(entries, done):
            image, w, h = None, e.width, e.height
            if isinstance(e.path, tuple):
                images = self._several(ctx, e, root, infos, issues) if root is not None else []
                if images is None:
                    continue
                layers = self.layers(e.data, None, None, issues)
                meta = layers.pop("meta", None) or {}
                if not images:
                    meta["image_file"] = list(e.path)
                yield image_record(e.rid, self.label, image_value(images), meta=meta, **layers)
                continue
            if root is not None and e.path:
                info = infos[e.path]
                if info.error and info.error.startswith("outside: "):
                    raise self._outside_error(ctx, e, root, info.error.removeprefix("outside: "))
                if info.error:
                    self._missing(root, e.path, info, issues)
                    continue
                if info.width:
                    if w and h and (w, h) != (info.width, info.height):
                        issues.add("image_size_mismatch",
                                   {"path": e.path, "annotated": [w, h],
                                    "actual": [info.width, info.height]})
                    w, h = info.width, info.height
                image = {"root": self.label, "path": e.path, "width": w, "height": h,
                         "sha256": info.sha256}
            layers = self.layers(e.data, w, h, issues)
            meta = layers.pop("meta", None) or {}
            if image is None and e.path:
                meta["image_file"] = e.path
                if w and h:
                    meta["image_size"] = [w, h]
            yield image_record(e.rid, self.label, image, meta=meta, **layers)
            if (i + 1) % 10000 == 0:
                ctx.emit({"event": "progress", "step": ctx.step_id, "done": i + 1, "total": total})

    def _missing(self, root: Path, path: str, info: Any, issues: Issues) -> None:
        """A missing or corrupt image: an error (``on_missing_image: error``) or a counted skip."""
        kind = "missing_image" if info.error == "missing" else "corrupt_image"
        if self.params["on_missing_image"] == "error":
            raise InputError(f"image {info.error}", Location(str(root / path)),
                             hint="set on_missing_image: skip to leave it out")
        issues.skip_image(kind, path)

    def _several(self, ctx: OpContext, e: Entry, root: Path, infos: dict,
                 issues: Issues) -> list[dict] | None:
        """The image references of a record with several images, or ``None`` (skipped) when
        one of them is missing or corrupt; one outside the images folder is an error."""
        out = []
        for path in paths_of(e.path):
            info = infos[path]
            if info.error and info.error.startswith("outside: "):
                raise self._outside_error(ctx, e, root, info.error.removeprefix("outside: "))
            if info.error:
                self._missing(root, path, info, issues)
                return None
            out.append({"root": self.label, "path": path, "width": info.width,
                        "height": info.height, "sha256": info.sha256})
        return out


def _distinct_paths(batch: list[Entry]) -> bool:
    """Whether no image path of the batch is named twice (each is then checked in one run)."""
    paths = [p for e in batch for p in paths_of(e.path)]
    return len(set(paths)) == len(paths)


def _batches(stream: Iterator[Entry]) -> Iterator[tuple[list[Entry], int]]:
    """A stream of entries in batches of :data:`STREAM_BATCH`, each with the entries before it."""
    done = 0
    while batch := list(itertools.islice(stream, STREAM_BATCH)):
        yield batch, done
        done += len(batch)


@dataclass
class BuildJob:
    """A loader, as plain data a worker rebuilds it from, to build records of checked entries."""

    name: str
    params: dict
    label: str
    seed: int
    recipe_dir: str
    recipe: dict
    root: str | None  # the images folder


@dataclass
class BuiltRun:
    """A run of entries built into records (JSON lines, as the cache stores them), what was
    counted while building them, and the located error that stopped it."""

    lines: bytes = b""
    count: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    #: what the images' check here adds to the build's table (see :func:`vlitc.images.check_rows`)
    checked: tuple = ({}, 0, 0)


_LOADER: dict[str, Any] = step_cache()  # per process: the last job and the loader rebuilt from it


def build_run(job: BuildJob, run: tuple[Any, dict, Any, int]) -> BuiltRun:
    """Records of one run of entries, built in whatever process runs it (:meth:`AnnotationSource.
    load_lines`): the same lines the build's own process would store. ``run``: the entries
    packed, what is known of their images, their images' check to make here (for
    :func:`vlitc.images.check_rows`; what it adds to the table is sent back) and the entries
    before."""
    import orjson

    from vlitc.ops import registry

    packed, packed_infos, check, done = run
    infos = {p: ImageInfo.unpacked(t) for p, t in packed_infos.items()}
    checked: tuple = ({}, 0, 0)
    if check is not None:
        found, checked = check_rows(check)
        infos.update(found)
    if _LOADER.get("job") != job:
        _LOADER["op"] = registry.get("source", job.name)(job.params, label=job.label)
        _LOADER["job"] = job
    op = _LOADER["op"]
    entries = op.unpack(packed)
    ctx = OpContext(seed=job.seed, recipe_dir=Path(job.recipe_dir), recipe=job.recipe)
    issues = Issues(ctx)
    root = Path(job.root) if job.root is not None else None
    try:
        with cycle_collector_off():
            lines = [orjson.dumps(r) + b"\n" for r in op._build(entries, ctx, issues, root, infos, done)]
    except _SHAPE_ERRORS as e:
        return BuiltRun(counters=ctx.counters, error=str(op._shape_error(ctx, e)))
    except InputError as e:
        return BuiltRun(counters=ctx.counters, error=str(e))
    return BuiltRun(b"".join(lines), len(lines), ctx.counters, issues.examples, issues.skipped,
                    checked=checked)


def paths_of(path: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The image paths of an entry (none, one, or several)."""
    if not path:
        return ()
    return path if isinstance(path, tuple) else (path,)
