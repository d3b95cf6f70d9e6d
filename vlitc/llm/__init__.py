"""Who talks to models: one request/response interface, providers (openai, anthropic, mock), a
per-request store, shared rate limits, retries, cost accounting and the build's budget.

``session(recipe, cache_dir, emit)`` opens one :class:`LLMSession` per build;
``session.client(name).run(requests, step)`` answers requests from the store or the provider.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlitc.llm.session import Client, LLMSession, session
    from vlitc.llm.types import Request, Response

__all__ = ["Client", "LLMSession", "Request", "Response", "session"]

#: where each public name lives; imported on first use, so that reading a recipe (which imports
#: every op module) does not load asyncio, the SDK wrappers and the store
_HOME = {
    "Client": "session",
    "LLMSession": "session",
    "session": "session",
    "Request": "types",
    "Response": "types",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'vlitc.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vlitc.llm.{_HOME[name]}"), name)
    globals()[name] = value
    return value
