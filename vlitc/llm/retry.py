"""Retries: exponential backoff with jitter on 429, 5xx, timeouts, dropped connections and
malformed bodies, honouring ``Retry-After``; 400/401/403/404/422 stop at once.

Providers translate their SDK's exceptions into :class:`ProviderError`; this module only decides
whether and when to try again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")

#: statuses worth another try; everything else with a status is the caller's mistake
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_RETRY_AFTER = 120.0

_jitter = random.Random()  # timing only: never affects what a build produces


class ProviderError(Exception):
    """A failed call: ``status`` (None for timeouts, connection and body errors), ``kind``
    (``status``, ``timeout``, ``connection``, ``malformed``), and ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str = "status",
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status, self.kind, self.retry_after = status, kind, retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS or self.status >= 500


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return min(float(ms) / 1000.0, MAX_RETRY_AFTER)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        import datetime as dt

        when = parsedate_to_datetime(value)
        return min(max((when - dt.datetime.now(when.tzinfo)).total_seconds(), 0.0), MAX_RETRY_AFTER)
    except (TypeError, ValueError):
        return None


def backoff(attempt: int, base: float, cap: float = 30.0) -> float:
    """Delay before retry ``attempt`` (0-based): exponential, capped, with half-range jitter."""
    delay = min(cap, base * (2**attempt))
    return delay * (0.5 + 0.5 * _jitter.random())


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base: float,
    on_retry: Callable[[ProviderError], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds, fails with a non-retryable error, or runs out of retries;
    raises the last :class:`ProviderError`."""
    attempt = 0
    while True:
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt >= max_retries:
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = backoff(attempt, base)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after) if exc.retry_after > 0 else 0.0
            attempt += 1
            await asyncio.sleep(delay)
