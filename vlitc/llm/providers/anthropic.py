"""Anthropic Messages API through the official ``anthropic`` SDK (one sample per call)."""

from __future__ import annotations

from vlitc.llm.providers import Completion, Provider, api_key, sdk_call
from vlitc.llm.retry import ProviderError

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens


class AnthropicProvider(Provider):
    supports_n = False

    def __init__(self, name: str, config: dict):
        import anthropic
        from anthropic import AsyncAnthropic

        self._sdk = anthropic

        key = api_key(config, "ANTHROPIC_API_KEY", name, required=True)
        self._client = AsyncAnthropic(
            api_key=key,
            base_url=config.get("base_url"),
            max_retries=0,
            timeout=config.get("timeout", 120.0),
        )

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        system = "\n\n".join(m["content"] for m in params["messages"] if m["role"] == "system")
        kwargs = {
            "model": params["model"],
            "messages": [m for m in params["messages"] if m["role"] != "system"],
            "max_tokens": params.get("max_tokens") or DEFAULT_MAX_TOKENS,
        }
        if system:
            kwargs["system"] = system
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
            if params.get(ours) is not None:
                kwargs[theirs] = params[ours]
        stop = params.get("stop")
        if stop:
            kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body = await sdk_call(self._sdk, self._client.messages.create(**kwargs))
        return _completion(body)

    async def aclose(self) -> None:
        await self._client.close()


def _completion(body) -> Completion:
    try:
        text = "".join(b.text for b in body.content if getattr(b, "type", "") == "text")
        if not isinstance(text, str) or not body.content:
            raise ValueError("no text content")
        use = {
            "prompt_tokens": int(body.usage.input_tokens or 0),
            "completion_tokens": int(body.usage.output_tokens or 0),
        }
        return Completion([text], [body.stop_reason or ""], use, raw=body)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ProviderError(f"malformed response body: {exc}", kind="malformed") from None
