"""Rate limits: requests per minute and tokens per minute, shared by every step (and every
generator) that uses the same provider and model, and a concurrency cap per generator.

Both per-minute limits are token buckets holding at most one minute's allowance and refilling
continuously. A call takes its share at once and waits until the bucket is back at zero (the
level may go below zero: each caller waits behind those that took before it, first come first
served, so one look at the bucket is all a call needs, in this process or through a
:class:`Governor` serving several). Tokens are reserved before a call from an estimate (prompt
characters / 4 plus ``max_tokens``) and corrected with the real usage when the response arrives.

:class:`Governor` holds the limits and the budget of a build whose LLM steps fan out over
worker processes or Ray tasks: one instance serves them all (through a multiprocessing manager,
or as a Ray actor), so they share one rate limit per provider and model and one budget.
"""

from __future__ import annotations

import asyncio
import threading
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

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        self._t = now

    def reserve(self, amount: float) -> float:
        """Take ``amount`` (at most the capacity) now; the seconds to wait before using it."""
        self._refill()
        self.level -= min(float(amount), self.capacity)
        return max(0.0, -self.level / self.rate)

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` is available (an amount above capacity waits for a full bucket)."""
        delay = self.reserve(amount)
        if delay > 0:
            await asyncio.sleep(delay)

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

    def reserve(self, est_tokens: int) -> float:
        """Take one request and ``est_tokens``; the seconds to wait before sending."""
        wait = self.requests.reserve(1) if self.requests is not None else 0.0
        if self.tokens is not None:
            wait = max(wait, self.tokens.reserve(est_tokens))
        return wait

    async def acquire(self, est_tokens: int) -> None:
        delay = self.reserve(est_tokens)
        if delay > 0:
            await asyncio.sleep(delay)

    def settle(self, est_tokens: int, used_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.adjust(used_tokens - est_tokens)


class Governor:
    """The rate limits (per provider and model) and the budget of one build, for every process
    that sends its requests. Synchronous and thread-safe; each call is one round trip.

    ``spent_usd``/``spent_tokens`` start at what the build spent before the governor existed."""

    def __init__(self, budget: dict | None = None, spent_usd: float = 0.0, spent_tokens: int = 0):
        self.budget = dict(budget or {})
        self.spent_usd, self.spent_tokens = float(spent_usd), int(spent_tokens)
        self.reserved_usd, self.reserved_tokens = 0.0, 0
        self.calls = 0  # calls admitted
        self._limits: dict[str, Limits] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, rpm: float | None, tpm: float | None, usd: float,
              tokens: int) -> tuple[str | None, float]:
        """Reserve one call's estimated spend and its place under the per-minute limits of
        ``key`` (``provider:model``): ``(None, delay)`` when admitted (send after ``delay``
        seconds); ``("wait", 0)`` while only the calls in flight leave no room in the budget;
        ``(limit, 0)`` when the budget is reached (send nothing more)."""
        from vlitc.llm.cost import budget_verdict

        with self._lock:
            verdict = budget_verdict(self.budget, self.spent_usd, self.spent_tokens,
                                     self.reserved_usd, self.reserved_tokens, usd, tokens)
            if verdict is not None:
                return verdict, 0.0
            self.reserved_usd += usd
            self.reserved_tokens += tokens
            self.calls += 1
            lim = self._limits.get(key)
            if lim is None:
                lim = self._limits[key] = Limits(rpm, tpm)
            else:
                lim.tighten(rpm, tpm)
            return None, lim.reserve(tokens)

    def settle(self, key: str, usd_est: float, tokens_est: int, usd: float, tokens: int,
               answered: bool = True) -> None:
        """Give back a call's reservation and add what it really spent; an answered call also
        corrects the token bucket with its real usage."""
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - usd_est)
            self.reserved_tokens = max(0, self.reserved_tokens - tokens_est)
            self.spent_usd += usd
            self.spent_tokens += tokens
            lim = self._limits.get(key)
            if answered and lim is not None:
                lim.settle(tokens_est, tokens)

    def state(self) -> dict:
        """Spend so far, what is reserved, and the calls admitted (for tests and reports)."""
        with self._lock:
            return {"spent_usd": self.spent_usd, "spent_tokens": self.spent_tokens,
                    "reserved_usd": self.reserved_usd, "reserved_tokens": self.reserved_tokens,
                    "calls": self.calls}


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A provider-neutral estimate of a prompt's tokens (about 4 characters per token)."""
    return sum(len(text_of(m["content"])) for m in messages) // 4 + 4 * len(messages)


def estimate_tokens(messages: list[dict], max_tokens: int | None, n: int = 1) -> int:
    """A provider-neutral upper estimate of a call's tokens (about 4 characters per token)."""
    return estimate_prompt_tokens(messages) + n * (max_tokens or 256)
