"""Request and response shapes shared by every provider, and the canonical request key.

A request is provider-neutral: chat messages plus sampling parameters. Its cache key is the
sha256 of the canonical JSON of (provider, model, messages, effective sampling parameters,
sample index), so a request asked with ``n=5`` is stored as five entries and raising ``n`` to 6
later pays for one more sample only. The key of sample 0 leaves the index out, which makes it the
``request_id`` of the whole request.

A message's content is a string, or a list of parts: ``{"type": "text", "text": ...}`` and
``{"type": "image", "image": ImageSource}`` (see :mod:`vlitc.llm.vision`). In the key an image
part is its sha256 and resolved preparation, never its bytes; a text-only request's key is the
same as before parts existed. A generator on an endpoint other than its provider's default adds
``endpoint`` (or its declared ``model_revision``) to the key, so another server with the same
model name does not reuse old answers. What only changes how a request is billed (a prompt
cache breakpoint, ``Request.cache_prefix``) is never part of the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from vlitc.hashing import canonical

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
    #: how many leading messages are the same across a step's requests (the system prompt and
    #: the in-context examples): where a provider's prompt cache may break. Billing only: never
    #: part of the request key.
    cache_prefix: int | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a request needs at least one message")
        for m in self.messages:
            content = m.get("content")
            if m.get("role") not in ("system", "user", "assistant") or not (
                isinstance(content, str) or (isinstance(content, list) and _parts_ok(content))
            ):
                raise ValueError(f"bad message {m!r}: needs role system|user|assistant and content")
        if self.n < 1:
            raise ValueError("n must be at least 1")


def _parts_ok(parts: list) -> bool:
    from vlitc.llm.vision import ImageSource

    return bool(parts) and all(
        isinstance(p, dict)
        and (
            (p.get("type") == "text" and isinstance(p.get("text"), str))
            or (p.get("type") == "image" and isinstance(p.get("image"), ImageSource))
        )
        for p in parts
    )


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


def base_request(
    provider: str,
    model: str,
    req: Request,
    defaults: dict,
    image_key: Callable[[Any], dict] | None = None,
    identity: dict | None = None,
) -> dict:
    """The canonical form of a request, without the sample index. ``image_key`` turns an image
    part's :class:`~vlitc.llm.vision.ImageSource` into its key form (hash + preparation);
    ``identity`` adds what else tells models apart (a non-default ``endpoint`` or a declared
    ``model_revision``, the mock's ``script``)."""
    msgs = []
    for m in req.messages:
        content = m["content"]
        if not isinstance(content, str):
            if image_key is None:
                raise ValueError("a request with image parts needs an image preparation")
            content = [
                p if p["type"] == "text" else image_key(p["image"])
                for p in content
            ]
        msgs.append({"role": m["role"], "content": content})
    out = {"provider": provider, "model": model, "messages": msgs, **effective(req, defaults)}
    if identity:
        out.update(identity)
    return out


#: how each provider can be asked for structured output (a generator's ``response_format``),
#: the default first: OpenAI's ``response_format`` as a JSON schema, JSON mode, or JSON mode with
#: a ``schema`` (llama-cpp-python's server); Anthropic's forced tool use with the schema as its
#: input schema, its structured outputs (``output_config``), or a reply prefilled with ``{``
RESPONSE_MODES = {
    "openai": ("json_schema", "json_object", "json_object_schema", "none"),
    "anthropic": ("tool", "json_schema", "prefill", "none"),
    "mock": ("none",),
}


def response_mode(provider: str, config: dict) -> str:
    """How this generator is asked for structured output (``none``: it is not)."""
    return str(config.get("response_format") or RESPONSE_MODES.get(provider, ("none",))[0])


def with_mode(req: Request, mode: str) -> Request:
    """``req`` as a generator sends it: its ``response_format`` tagged with the generator's
    ``mode`` (so the key tells the ways of asking apart), or dropped under ``none`` (the request
    is then the same as one that never asked)."""
    if req.response_format is None:
        return req
    if mode == "none":
        return replace(req, response_format=None)
    return replace(req, response_format={**req.response_format, "mode": mode})


def format_parts(response_format: dict) -> tuple[str, dict | None, str]:
    """(mode, JSON schema or ``None``, name) of a tagged ``response_format``."""
    inner = response_format.get("json_schema") or {}
    schema = inner.get("schema") or response_format.get("schema")
    return str(response_format.get("mode", "")), schema, str(inner.get("name") or "answer")


#: each provider's own endpoint: a generator pointed elsewhere keys its requests by endpoint
DEFAULT_ENDPOINTS = {
    "openai": ("https://api.openai.com/v1",),
    "anthropic": ("https://api.anthropic.com", "https://api.anthropic.com/v1"),
}


def identity(provider: str, config: dict) -> dict:
    """What besides the model name tells a generator's answers apart, for the request key: a
    declared ``model_revision``, else an endpoint that is not the provider's default; the mock's
    script (template and responses)."""
    if config.get("model_revision"):
        return {"model_revision": str(config["model_revision"])}
    if provider == "mock":
        script = {k: config[k] for k in ("template", "responses") if config.get(k) is not None}
        if not script:
            return {}
        blob = canonical(script)
        return {"script": hashlib.sha256(blob).hexdigest()}
    base = str(config.get("base_url") or "").rstrip("/")
    if base and base not in DEFAULT_ENDPOINTS.get(provider, ()):
        return {"endpoint": base}
    return {}
