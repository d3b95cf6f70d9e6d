"""LLM backends behind one interface: ``await provider.complete(params, n) -> Completion``.

``params`` holds ``model``, ``messages`` and the effective sampling parameters (``None`` = the
provider's default). Providers raise :class:`vlitc.llm.retry.ProviderError` for every failure and
never retry themselves (their SDK's own retries are off).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from vlitc.errors import ConfigurationError
from vlitc.llm.retry import ProviderError, parse_retry_after


@dataclass
class Completion:
    texts: list[str]
    finish_reasons: list[str]
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    raw: Any = None


@dataclass
class BatchState:
    """Where a provider batch stands: ``status`` in the provider's words, ``ended`` once no
    request in it will change any more, ``done`` of ``total`` requests finished, and ``error``
    when the batch as a whole was refused (e.g. its file did not validate)."""

    id: str
    status: str
    ended: bool
    done: int = 0
    total: int = 0
    error: str | None = None


@dataclass
class BatchItem:
    """One request's outcome in an ended batch, by its ``custom_id``."""

    custom_id: str
    completion: Completion | None = None
    error: ProviderError | None = None


class Provider:
    """Base of the backends. ``supports_n``: one call can return several samples.
    ``batch_limits``: (requests, bytes) one batch may hold, where the provider has a batch API
    (then ``batch_line``, ``submit_batch``, ``batch_state`` and ``batch_results`` work)."""

    supports_n = False
    batch_limits: tuple[int, int] | None = None

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        raise NotImplementedError

    def batch_line(self, params: dict, n: int, custom_id: str) -> dict:
        """One request of a batch, as the provider's batch API takes it."""
        raise NotImplementedError

    async def submit_batch(self, lines: list[dict], metadata: dict) -> BatchState:
        raise NotImplementedError

    async def batch_state(self, batch_id: str) -> BatchState:
        raise NotImplementedError

    async def batch_results(self, batch_id: str) -> list[BatchItem]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


async def sdk_call(sdk: Any, awaitable: Any) -> Any:
    """Await an SDK call, turning the SDK's exceptions (openai and anthropic share their names)
    into :class:`ProviderError`."""
    try:
        return await awaitable
    except sdk.APITimeoutError as exc:
        raise ProviderError(f"timeout: {exc}", kind="timeout") from None
    except sdk.APIConnectionError as exc:
        raise ProviderError(f"connection error: {exc}", kind="connection") from None
    except sdk.APIStatusError as exc:
        raise ProviderError(
            f"HTTP {exc.status_code}: {exc.message}",
            status=exc.status_code,
            retry_after=parse_retry_after(exc.response.headers),
        ) from None
    except (ValueError, TypeError, sdk.APIResponseValidationError) as exc:
        raise ProviderError(f"malformed response body: {exc}", kind="malformed") from None


@lru_cache(maxsize=16)
def _accepted(method: Any) -> frozenset[str]:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a C method without a signature
        return frozenset()
    return frozenset(p.name for p in params if p.kind is not p.VAR_KEYWORD)


def flat_body(kwargs: dict) -> dict:
    """SDK keyword arguments as the JSON body they send (``extra_body`` merged in): what a batch
    request line carries, so a batched request is the request the SDK would have sent."""
    body = {k: v for k, v in kwargs.items() if k != "extra_body"}
    body.update(kwargs.get("extra_body") or {})
    return body


def sdk_kwargs(method: Any, fields: dict) -> dict:
    """Keyword arguments for an SDK call: each field the installed SDK's method names becomes a
    keyword argument; the others go in ``extra_body`` (sent as they are in the JSON body), so a
    sampling parameter that an SDK release dropped from its signature still reaches the API
    instead of crashing the call."""
    accepted = _accepted(getattr(method, "__func__", method))
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in fields.items():
        if v is None:
            continue
        (out if k in accepted else extra)[k] = v
    if extra:
        out["extra_body"] = {**out.get("extra_body", {}), **extra}
    return out


def api_key(config: dict, default_env: str, generator: str, required: bool) -> str | None:
    """Read the key from the environment variable the recipe names (never from the recipe)."""
    env = config.get("api_key_env") or default_env
    key = os.environ.get(env)
    if not key and required:
        raise ConfigurationError(
            f"generator {generator!r}: environment variable {env} is not set; "
            f"export {env}=... (keys never go in a recipe)"
        )
    return key


def make_provider(name: str, config: dict) -> Provider:
    """Build the backend for generator ``name`` from its validated config."""
    kind = config["provider"]
    if kind == "openai":
        from vlitc.llm.providers.openai import OpenAIProvider

        return OpenAIProvider(name, config)
    if kind == "anthropic":
        from vlitc.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, config)
    if kind == "mock":
        from vlitc.llm.providers.mock import MockProvider

        return MockProvider(name, config)
    raise ConfigurationError(f"generator {name!r}: unknown provider {kind!r}")
