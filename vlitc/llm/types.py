"""Request and response shapes shared by every provider, and the canonical request key.

A request is provider-neutral: chat messages plus sampling parameters. Its cache key is the
sha256 of the canonical JSON of (provider, model, messages, effective sampling parameters,
sample index), so a request asked with ``n=5`` is stored as five entries and raising ``n`` to 6
later pays for one more sample only. The key of sample 0 leaves the index out, which makes it the
``request_id`` of the whole request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

#: sampling parameters that change responses, hence belong in the key
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed", "stop", "response_format")


@dataclass(frozen=True)
class Request:
    """One chat request; ``None`` fields take the generator's defaults."""

    messages: list[dict]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int = 1
    seed: int | None = None
    stop: list[str] | str | None = None
    response_format: dict | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a request needs at least one message")
        for m in self.messages:
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(
                m.get("content"), str
            ):
                raise ValueError(f"bad message {m!r}: needs role system|user|assistant and content")
        if self.n < 1:
            raise ValueError("n must be at least 1")


@dataclass
class Response:
    """What a request produced: one text per sample, or ``error`` when it finally failed."""

    texts: list[str]
    finish_reasons: list[str]
    usage: dict
    request_id: str
    cached: bool = False
    error: str | None = None
    keys: list[str] = field(default_factory=list)  # the per-sample cache keys
    raw: Any = None  # provider body of the first fresh call (not cached)


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def sample_key(base: dict, index: int) -> str:
    """Cache key of sample ``index`` of a canonical request ``base`` (index 0 is the request id)."""
    body = base if index == 0 else {**base, "index": index}
    return hashlib.sha256(canonical(body)).hexdigest()


def effective(req: Request, defaults: dict) -> dict:
    """Sampling parameters after applying generator defaults (``None`` = provider default)."""
    out = {}
    for k in SAMPLING_KEYS:
        v = getattr(req, k)
        out[k] = defaults.get(k) if v is None else v
    return out


def base_request(provider: str, model: str, req: Request, defaults: dict) -> dict:
    """The canonical form of a request, without the sample index."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in req.messages]
    return {"provider": provider, "model": model, "messages": msgs, **effective(req, defaults)}
