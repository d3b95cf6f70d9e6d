"""The one way to hash each thing: canonical JSON (step keys, LLM request keys, per-item
digests, release comparisons) and file contents.

Canonical JSON has sorted keys, no whitespace and UTF-8 text (orjson's encoding: a float is
written in its shortest round-tripping form; a number or boolean key as a string). A value JSON
cannot hold raises: ``TypeError`` for an object, ``ValueError`` for NaN or infinity (never a
fingerprint that silently equals ``null``). LLM request keys were always these bytes; step keys
(written with the json module before) are the same bytes for every value but floats between
1e-9 and 1e-4 (json wrote ``1e-05``, this ``0.00001``). A rule changed here changes every key,
so it changes only on purpose.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import orjson

#: bytes read at a time when a file is hashed (unbuffered reads: no copy through a buffer; a
#: block this size is small enough to be allocated quickly for each of many small files)
_CHUNK = 1 << 18
#: keys sorted; a non-string key (YAML allows ``1:``) is written as a string, as JSON requires
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _non_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_non_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_non_finite(v) for v in obj)
    return False


def canonical(obj: Any, *, finite: bool = True) -> bytes:
    """Canonical JSON bytes of ``obj`` (see the module docstring for the rules). ``finite=False``
    writes NaN and infinity as ``null`` instead of raising: for content digests of data read
    from datasets (a per-item cache key), where a NaN must not stop a build."""
    out = orjson.dumps(obj, option=_OPTIONS)  # JSONEncodeError is a TypeError
    if finite and b"null" in out and _non_finite(obj):  # orjson writes NaN and infinity as null
        raise ValueError("NaN and infinity have no canonical JSON form")
    return out


def digest(obj: Any, *, finite: bool = True) -> str:
    """Hex sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical(obj, finite=finite)).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks of :data:`_CHUNK`."""
    return sha256_file_head(path)[0]


def sha256_file_head(path: str | Path) -> tuple[str, bytes]:
    """:func:`sha256_file`, and the file's first bytes as they were read for it (its first
    :data:`_CHUNK`, or the whole file when it is smaller): what a reader of the header takes
    without opening the file again."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        head = block = f.read(_CHUNK)
        while block:
            h.update(block)
            block = f.read(_CHUNK)
    return h.hexdigest(), head
