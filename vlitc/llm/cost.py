"""Prices, usage accounting per step and per generator, and the build's budget.

Prices are USD per million tokens, matched on the longest model-name prefix; a generator's
``prices: {input, output, cache_read, cache_write}`` overrides the table (local servers:
``{input: 0, output: 0}``). Only fresh calls cost money: cache hits are counted but free. The
budget is kept with the requests in flight counted: each call reserves its estimated spend
(prompt characters / 4 plus ``max_tokens``, or the longest answer seen, per sample) before it is
sent, and the reservation is replaced by the real usage when the answer arrives, so a build stops
short of ``max_usd`` instead of overshooting it by everything in flight.

Prompt caching: ``prompt_tokens`` always counts the whole prompt; ``cache_read_tokens`` (OpenAI's
``cached_tokens``, Anthropic's ``cache_read_input_tokens``) and ``cache_write_tokens``
(Anthropic's ``cache_creation_input_tokens``) are the parts of it billed at the ``cache_read``
and ``cache_write`` rates instead of ``input``. The table holds the providers' published rates:
OpenAI bills a cached prefix at its discount and writes for free; Anthropic bills a 5-minute cache
write at 1.25x and a read at 0.1x the input rate. A model without a cache rate bills cached
tokens at the input rate. ``usd_saved`` is what the same calls would have cost without caching,
minus what they cost (a write's surcharge counts against it).

Batches: a generator with ``batch: true`` pays ``BATCH_FACTOR`` of every rate (OpenAI's Batch
API and Anthropic's Message Batches both take half), or its own ``prices: {batch: share}``;
:func:`generator_price` is the price a generator's requests are accounted and planned at.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple

#: the usage fields that say how much of a prompt the provider's cache served or stored
CACHE_USAGE = ("cache_read_tokens", "cache_write_tokens")


class Price(NamedTuple):
    """USD per 1M tokens; ``None`` cache rates bill those tokens at the ``input`` rate."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def read_rate(self) -> float:
        return self.input if self.cache_read is None else self.cache_read

    def write_rate(self) -> float:
        return self.input if self.cache_write is None else self.cache_write


def _claude(inp: float, out: float) -> Price:
    """Anthropic's published rule: 5-minute cache writes at 1.25x input, reads at 0.1x."""
    return Price(inp, out, round(inp * 0.1, 6), round(inp * 1.25, 6))


#: USD per 1M tokens (input, output, cached input read, cache write), list prices; override per
#: generator in the recipe
PRICES: dict[str, Price] = {
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-4": Price(30.0, 60.0),
    "gpt-4-turbo": Price(10.0, 30.0),
    "gpt-4o": Price(2.50, 10.0, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "claude-3-haiku": _claude(0.25, 1.25),
    "claude-3-5-haiku": _claude(0.80, 4.00),
    "claude-3-5-sonnet": _claude(3.00, 15.0),
    "claude-3-7-sonnet": _claude(3.00, 15.0),
    "claude-sonnet-4": _claude(3.00, 15.0),
    "claude-opus-4": _claude(15.0, 75.0),
    "mock": Price(0.0, 0.0),
}


#: the smallest prompt prefix a provider caches, by model-name prefix (default per provider)
CACHE_MINIMUM = {"openai": 1024, "anthropic": 1024, "claude-3-haiku": 2048,
                 "claude-3-5-haiku": 2048, "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096}


def cache_minimum(provider: str, model: str) -> int:
    """Prompt tokens a prefix needs before ``provider`` caches it for ``model``."""
    best = max((p for p in CACHE_MINIMUM if model.startswith(p)), key=len, default=None)
    return CACHE_MINIMUM[best] if best else CACHE_MINIMUM.get(provider, 1024)


def price_for(model: str, override: dict | None = None) -> Price | None:
    """The model's :class:`Price`, or ``None`` when the model is unknown."""
    if override:
        def rate(k: str) -> float | None:
            return None if override.get(k) is None else float(override[k])

        return Price(float(override.get("input", 0.0)), float(override.get("output", 0.0)),
                     rate("cache_read"), rate("cache_write"))
    best = max((p for p in PRICES if model.startswith(p)), key=len, default=None)
    return PRICES[best] if best else None


#: share of the list price a batch request pays (OpenAI Batch API, Anthropic Message Batches)
BATCH_FACTOR = 0.5


def generator_price(config: dict) -> Price | None:
    """The :class:`Price` a generator's requests cost: the model's (or the ``prices``
    override), every rate times the batch share when it sends through a batch API."""
    prices = config.get("prices") or {}
    price = price_for(str(config.get("model") or ""), prices)
    if price is None or not config.get("batch"):
        return price
    share = float(prices.get("batch", BATCH_FACTOR))
    return Price(price.input * share, price.output * share,
                 None if price.cache_read is None else price.cache_read * share,
                 None if price.cache_write is None else price.cache_write * share)


def cost(price: Price | tuple | None, prompt_tokens: int, completion_tokens: int,
         cache_read: int = 0, cache_write: int = 0) -> float:
    """USD of ``prompt_tokens`` (of which ``cache_read`` and ``cache_write`` are billed at the
    cache rates) and ``completion_tokens``."""
    if price is None:
        return 0.0
    p = price if isinstance(price, Price) else Price(*price)
    plain = max(0, prompt_tokens - cache_read - cache_write)
    return (plain * p.input + cache_read * p.read_rate() + cache_write * p.write_rate()
            + completion_tokens * p.output) / 1e6


def saved(price: Price | tuple | None, cache_read: int, cache_write: int) -> float:
    """USD that caching saved on these tokens (reads' discount less writes' surcharge)."""
    if price is None:
        return 0.0
    p = price if isinstance(price, Price) else Price(*price)
    return (cache_read * (p.input - p.read_rate()) - cache_write * (p.write_rate() - p.input)) / 1e6


@dataclass
class Tally:
    """Counters for one step or one generator."""

    calls: int = 0  # fresh calls sent and answered
    cached: int = 0  # samples served from the cache
    samples: int = 0  # samples produced (fresh or cached)
    failed: int = 0  # samples whose request finally failed
    retries: int = 0
    batches: int = 0  # provider batches created (``batch: true``)
    batched: int = 0  # fresh calls answered through a batch
    images: int = 0  # images attached to fresh calls
    image_tokens: int = 0  # what they cost by the provider's rule (part of prompt_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic)
    usd: float = 0.0
    usd_saved: float = 0.0  # what prompt caching saved

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["usd"] = round(self.usd, 6)
        d["usd_saved"] = round(self.usd_saved, 6)
        return d


def budget_verdict(budget: dict, spent_usd: float, spent_tokens: int, reserved_usd: float,
                   reserved_tokens: int, usd: float, tokens: int) -> str | None:
    """Whether a call estimated at ``usd``/``tokens`` fits the budget beside what is spent and
    reserved: ``None`` (it fits), ``"wait"`` (only the calls in flight are in the way: they may
    settle lower than reserved) or the limit that is reached."""
    max_usd, max_tokens = budget.get("max_usd"), budget.get("max_tokens")
    # spend only grows: a call that does not fit beside what is spent never will
    if max_usd is not None and spent_usd + usd > max_usd:
        return f"max_usd {max_usd} (spent ${spent_usd:.4f})"
    if max_tokens is not None and spent_tokens + tokens > max_tokens:
        return f"max_tokens {max_tokens} (used {spent_tokens})"
    if (max_usd is not None and spent_usd + reserved_usd + usd > max_usd) or (
        max_tokens is not None and spent_tokens + reserved_tokens + tokens > max_tokens
    ):
        return "wait"
    return None


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
        with self._lock:
            used = self.total.prompt_tokens + self.total.completion_tokens
            verdict = budget_verdict(self.budget, self.total.usd, used, self.reserved_usd,
                                     self.reserved_tokens, usd, tokens)
            if verdict is None:
                self.reserved_usd += usd
                self.reserved_tokens += tokens
            return verdict

    def tallies(self) -> dict:
        """The counters, unrounded, as plain data (what :meth:`merge` adds)."""
        with self._lock:
            return {"total": dict(self.total.__dict__),
                    "steps": {k: dict(v.__dict__) for k, v in self.steps.items()},
                    "generators": {k: dict(v.__dict__) for k, v in self.generators.items()},
                    "unpriced": sorted(self.unpriced)}

    def merge(self, other: dict) -> None:
        """Add another process's counters (its :meth:`tallies`)."""
        with self._lock:
            pairs = [(self.total, other["total"])]
            pairs += [(self.steps.setdefault(k, Tally()), v) for k, v in other["steps"].items()]
            pairs += [(self.generators.setdefault(k, Tally()), v)
                      for k, v in other["generators"].items()]
            for mine, counts in pairs:
                for k, v in counts.items():
                    setattr(mine, k, getattr(mine, k) + v)
            self.unpriced.update(other["unpriced"])

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
