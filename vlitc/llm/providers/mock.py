"""A deterministic in-process backend for tests and dry runs: no network, no key.

Modes (generator params): ``template`` (a Jinja2 template rendered with ``last_user``,
``system``, ``index``, ``model``, ``messages``, ``images``: the attached images' ``sha256``,
``width``, ``height``), ``responses`` (a list; each request picks one by
its content hash and sample index), or echo (the last user message) when neither is given.
``fail: {rate, status, attempts}`` makes a ``rate`` share of requests (chosen by content hash)
fail ``attempts`` times with HTTP ``status`` before succeeding (``attempts: 0`` = always fail).
``calls`` records every call, for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import orjson

from vlitc.errors import ConfigurationError
from vlitc.llm.providers import Completion, Provider
from vlitc.llm.retry import ProviderError

if TYPE_CHECKING:
    import jinja2


#: request params that only change billing (not what a model answers): the mock ignores them
BILLING_ONLY = ("cache_prefix",)


class MockProvider(Provider):
    supports_n = False

    def __init__(self, name: str, config: dict):
        self.name = name
        self.template = config.get("template")
        self.responses = list(config.get("responses") or [])
        self.fail = dict(config.get("fail") or {})
        self.latency = float(config.get("latency", 0.0))
        self.calls: list[dict] = []
        self._attempts: dict[str, int] = {}
        self._compiled: jinja2.Template | None = None

    def _text(self, params: dict, digest: int, index: int) -> str:
        from vlitc.llm.vision import text_of

        msgs = params["messages"]
        last_user = next((text_of(m["content"]) for m in reversed(msgs) if m["role"] == "user"), "")
        images = [
            {k: p.get(k) for k in ("sha256", "width", "height", "detail")}
            for m in msgs if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image"
        ]
        if self.template is not None:
            from vlitc.templating import RAW_ENV, TemplateProblem, render, template

            try:
                if self._compiled is None:
                    self._compiled = template(self.template, RAW_ENV)
                system = next((text_of(m["content"]) for m in msgs if m["role"] == "system"), "")
                return render(self._compiled, {"last_user": last_user, "system": system,
                                               "index": index, "model": params["model"],
                                               "messages": msgs, "images": images},
                              self.template)
            except TemplateProblem as e:
                raise ConfigurationError(
                    f"generator {self.name!r}: mock template: {e.message}") from None
        if self.responses:
            return self.responses[(digest + index) % len(self.responses)]
        return last_user

    def _maybe_fail(self, key: str, digest: int) -> None:
        rate = float(self.fail.get("rate", 0.0))
        if rate <= 0 or (digest % 10_000) >= rate * 10_000:
            return
        attempts = int(self.fail.get("attempts", 1))
        seen = self._attempts.get(key, 0)
        self._attempts[key] = seen + 1
        if attempts == 0 or seen < attempts:
            status = int(self.fail.get("status", 500))
            raise ProviderError(
                f"HTTP {status}: injected failure",
                status=status,
                retry_after=0.0 if status == 429 else None,
            )

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        params = {k: v for k, v in params.items() if k not in BILLING_ONLY}
        blob = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        key = hashlib.sha256(blob + str(first).encode()).hexdigest()
        digest = int(key[:12], 16)
        self.calls.append({**params, "index": first})
        if self.latency:
            await asyncio.sleep(self.latency)
        self._maybe_fail(key, digest)
        text = self._text(params, digest, first)
        from vlitc.llm.vision import text_of

        prompt = sum(len(text_of(m["content"])) for m in params["messages"]) // 4 + 1
        usage = {"prompt_tokens": prompt, "completion_tokens": len(text) // 4 + 1}
        return Completion([text], ["stop"], usage)
