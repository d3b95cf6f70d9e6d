"""OpenAI Chat Completions through the official ``openai`` SDK; ``base_url`` reaches any
OpenAI-compatible server (vLLM, Ollama, llama.cpp's server)."""

from __future__ import annotations

from vlitc.llm.providers import Completion, Provider, api_key, sdk_call
from vlitc.llm.retry import ProviderError

_LOCAL_KEY = "not-needed"  # OpenAI-compatible local servers ignore the key but the SDK wants one


class OpenAIProvider(Provider):
    supports_n = True

    def __init__(self, name: str, config: dict):
        import openai
        from openai import AsyncOpenAI

        self._sdk = openai

        base_url = config.get("base_url")
        key = api_key(config, "OPENAI_API_KEY", name, required=not base_url)
        self._client = AsyncOpenAI(
            api_key=key or _LOCAL_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=config.get("timeout", 120.0),
        )

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        kwargs = {k: v for k, v in params.items() if v is not None}
        if n > 1:
            kwargs["n"] = n
        body = await sdk_call(self._sdk, self._client.chat.completions.create(**kwargs))
        return _completion(body)

    async def aclose(self) -> None:
        await self._client.close()


def _completion(body) -> Completion:
    try:
        choices = sorted(body.choices, key=lambda c: c.index)
        texts = [c.message.content for c in choices]
        if not texts or any(not isinstance(t, str) for t in texts):
            raise ValueError("no text in choices")
        reasons = [c.finish_reason or "" for c in choices]
        usage = body.usage
        use = {
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        }
    except (AttributeError, TypeError, ValueError) as exc:
        raise ProviderError(f"malformed response body: {exc}", kind="malformed") from None
    return Completion(texts, reasons, use, raw=body)
