"""Handing freed memory back to the system: the build's process between steps, and a
worker between the chunks it runs; a worker's caches that last one step (:func:`step_cache`)."""

from __future__ import annotations

import os
import sys
from typing import Any

_LIBC: Any = None
#: growth of the resident memory since the last trim from which :func:`trim_heap` runs a full
#: collection (a step that grew the process by less left nothing worth one)
COLLECT_GROWTH = 64 << 20
#: the resident bytes after the last trim
_AFTER_TRIM = 0
#: the caches :func:`step_cache` made, emptied by :func:`end_step`
_STEP_CACHES: list[dict] = []


def step_cache() -> dict:
    """A dict a worker keeps what it made for the chunks of one step in (an image folder's
    checker and its listing, a loader rebuilt from the step's job): emptied when the worker
    begins another step's chunks (:func:`end_step`, :func:`vlitc.run.engine.in_worker`), so
    that nothing one step made stays in every worker for the rest of the build (a 2M-image
    folder's listing held 200 MB in each worker from the source step to the release)."""
    cache: dict = {}
    _STEP_CACHES.append(cache)
    return cache


def end_step() -> None:
    """Let go of what the worker's step caches hold, and hand the memory back."""
    for cache in _STEP_CACHES:
        cache.clear()
    trim_heap()


def _resident() -> int | None:
    """This process's resident bytes (Linux; ``None`` elsewhere: no collection then)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def trim_heap() -> None:
    """Hand freed memory back to the system between steps. A step over millions of samples
    frees its arrays and tables when it ends, but the memory stays the process's: Python's
    allocator keeps an arena mapped while anything in it is held, and the interpreter's free
    lists hold thousands of freed tuples, each in another arena when they were freed in
    another order than made (a 2M-file folder's sorted listing pins 200 MB so); glibc keeps
    freed heap memory mapped (``malloc_trim``; nothing elsewhere). Without it the build's
    resident memory stays at that step's peak for every step after it. A full collection
    empties the free lists; it runs when the process grew by :data:`COLLECT_GROWTH` since the
    last trim (its cost grows with the objects alive: a process with a model loaded pays it
    only after a step that left memory behind)."""
    global _LIBC, _AFTER_TRIM
    now = _resident()
    if now is not None and now - _AFTER_TRIM >= COLLECT_GROWTH:
        import gc

        gc.collect()
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                _LIBC = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
            except (OSError, AttributeError):  # not glibc (musl has none)
                pass
    if _LIBC:
        _LIBC(0)
    _AFTER_TRIM = _resident() or 0
