"""Asyncio rate limits: requests per minute and tokens per minute, shared by every step (and
every generator) that uses the same provider and model, and a concurrency cap per generator.

Both per-minute limits are token buckets holding at most one minute's allowance and refilling
continuously. Tokens are reserved before a call from an estimate (prompt characters / 4 plus
``max_tokens``) and corrected with the real usage when the response arrives.
"""

from __future__ import annotations

import asyncio
import time

from vlitc.llm.vision import text_of


class Bucket:
    """A token bucket of ``per_minute`` capacity refilling at ``per_minute / 60`` per second."""

    def __init__(self, per_minute: float, clock=time.monotonic):
        if per_minute <= 0:
            raise ValueError("a per-minute limit must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = float(per_minute)
        self._clock = clock
        self._t = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        self._t = now

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` is available (an amount above capacity waits for a full bucket)."""
        amount = min(float(amount), self.capacity)
        if not self._lock.locked():  # nobody waiting: take without queueing
            self._refill()
            if self.level >= amount:
                self.level -= amount
                return
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Give back (negative ``delta``) or charge more after the real usage is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class Limits:
    """The per-minute limits of one provider+model (either may be ``None``: unlimited)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.requests = Bucket(rpm) if rpm else None
        self.tokens = Bucket(tpm) if tpm else None

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        """Two generators naming the same model share the stricter of their limits."""
        if rpm and (self.requests is None or rpm < self.requests.capacity):
            self.requests = Bucket(rpm)
        if tpm and (self.tokens is None or tpm < self.tokens.capacity):
            self.tokens = Bucket(tpm)

    async def acquire(self, est_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(est_tokens)

    def settle(self, est_tokens: int, used_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.adjust(used_tokens - est_tokens)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A provider-neutral estimate of a prompt's tokens (about 4 characters per token)."""
    return sum(len(text_of(m["content"])) for m in messages) // 4 + 4 * len(messages)


def estimate_tokens(messages: list[dict], max_tokens: int | None, n: int = 1) -> int:
    """A provider-neutral upper estimate of a call's tokens (about 4 characters per token)."""
    return estimate_prompt_tokens(messages) + n * (max_tokens or 256)
