"""Who talks to models: one request/response interface, providers (openai, anthropic, mock), a
per-request store, shared rate limits, retries, cost accounting and the build's budget.

``session(recipe, cache_dir, emit)`` opens one :class:`LLMSession` per build;
``session.client(name).run(requests, step)`` answers requests from the store or the provider.
"""

from __future__ import annotations

from vlitc.llm.estimate import estimate
from vlitc.llm.session import Client, LLMSession, session
from vlitc.llm.types import Request, Response

__all__ = ["Client", "LLMSession", "Request", "Response", "estimate", "session"]
