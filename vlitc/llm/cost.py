"""Prices, usage accounting per step and per generator, and the build's budget.

Prices are USD per million tokens, matched on the longest model-name prefix; a generator's
``prices: {input, output}`` overrides the table (local servers: ``{input: 0, output: 0}``).
Only fresh calls cost money: cache hits are counted but free. The budget is kept with the
requests in flight counted: each call reserves its estimated spend (prompt characters / 4 plus
``max_tokens``, or the longest answer seen, per sample) before it is sent, and the reservation
is replaced by the real usage when the answer arrives, so a build stops short of ``max_usd``
instead of overshooting it by everything in flight.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

#: USD per 1M tokens (input, output), list prices; override per generator in the recipe
PRICES: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4": (30.0, 60.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.0),
    "claude-3-7-sonnet": (3.00, 15.0),
    "claude-sonnet-4": (3.00, 15.0),
    "claude-opus-4": (15.0, 75.0),
    "mock": (0.0, 0.0),
}


def price_for(model: str, override: dict | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or ``None`` when the model is unknown."""
    if override:
        return float(override.get("input", 0.0)), float(override.get("output", 0.0))
    best = max((p for p in PRICES if model.startswith(p)), key=len, default=None)
    return PRICES[best] if best else None


def cost(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


@dataclass
class Tally:
    """Counters for one step or one generator."""

    calls: int = 0  # fresh calls sent and answered
    cached: int = 0  # samples served from the cache
    samples: int = 0  # samples produced (fresh or cached)
    failed: int = 0  # samples whose request finally failed
    retries: int = 0
    images: int = 0  # images attached to fresh calls
    image_tokens: int = 0  # what they cost by the provider's rule (part of prompt_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["usd"] = round(self.usd, 6)
        return d


@dataclass
class Accounting:
    """Usage per step and per generator, and the budget (``max_usd``, ``max_tokens``)."""

    budget: dict = field(default_factory=dict)
    steps: dict[str, Tally] = field(default_factory=dict)
    generators: dict[str, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    unpriced: set[str] = field(default_factory=set)
    reserved_usd: float = 0.0  # estimated spend of the calls in flight
    reserved_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _each(self, step: str, gen: str):
        return (
            self.steps.setdefault(step, Tally()),
            self.generators.setdefault(gen, Tally()),
            self.total,
        )

    def add(self, step: str, gen: str, **counts: float) -> None:
        with self._lock:
            for t in self._each(step, gen):
                for k, v in counts.items():
                    setattr(t, k, getattr(t, k) + v)

    def reserve(self, usd: float, tokens: int) -> str | None:
        """Reserve a call's estimated spend: ``None`` when reserved, ``"wait"`` when only the
        calls in flight leave no room (they may settle lower than reserved), else the limit
        that is reached."""
        max_usd, max_tokens = self.budget.get("max_usd"), self.budget.get("max_tokens")
        with self._lock:
            used = self.total.prompt_tokens + self.total.completion_tokens
            # spend only grows: a call that does not fit beside what is spent never will
            if max_usd is not None and self.total.usd + usd > max_usd:
                return f"max_usd {max_usd} (spent ${self.total.usd:.4f})"
            if max_tokens is not None and used + tokens > max_tokens:
                return f"max_tokens {max_tokens} (used {used})"
            if (max_usd is not None and self.total.usd + self.reserved_usd + usd > max_usd) or (
                max_tokens is not None and used + self.reserved_tokens + tokens > max_tokens
            ):
                return "wait"
            self.reserved_usd += usd
            self.reserved_tokens += tokens
            return None

    def settle(self, usd: float, tokens: int) -> None:
        """Give back a reservation (the real usage is added with :meth:`add`)."""
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - usd)
            self.reserved_tokens = max(0, self.reserved_tokens - tokens)

    def exhausted(self) -> str | None:
        """Which budget limit has been reached, or ``None``."""
        max_usd, max_tokens = self.budget.get("max_usd"), self.budget.get("max_tokens")
        if max_usd is not None and self.total.usd >= max_usd:
            return f"max_usd {max_usd} (spent ${self.total.usd:.4f})"
        used = self.total.prompt_tokens + self.total.completion_tokens
        if max_tokens is not None and used >= max_tokens:
            return f"max_tokens {max_tokens} (used {used})"
        return None

    def as_dict(self) -> dict:
        return {
            "total": self.total.as_dict(),
            "steps": {k: v.as_dict() for k, v in sorted(self.steps.items())},
            "generators": {k: v.as_dict() for k, v in sorted(self.generators.items())},
            "budget": dict(self.budget),
            "unpriced_models": sorted(self.unpriced),
        }
