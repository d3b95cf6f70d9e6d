"""Anthropic Messages API through the official ``anthropic`` SDK (one sample per call).

Sampling parameters map onto what the installed SDK's ``messages.create`` names; a parameter
the SDK no longer names (anthropic 2.x dropped ``temperature`` and ``top_p`` from the
signature) is sent in ``extra_body``, i.e. in the JSON body as the Messages API reads it.
``stop`` becomes ``stop_sequences``; ``seed`` and ``response_format`` have no Messages API
equivalent and are not sent (they stay in the request key). There is no ``n``: ``n`` samples
cost ``n`` calls. Image parts become ``image`` blocks with a base64 source and media type (or a
``url`` source when the generator asks for URLs and the image has one).
"""

from __future__ import annotations

from vlitc.llm.providers import Completion, Provider, api_key, sdk_call, sdk_kwargs
from vlitc.llm.retry import ProviderError

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens


def wire_part(part: dict) -> dict:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    if part.get("url"):
        return {"type": "image", "source": {"type": "url", "url": part["url"]}}
    return {"type": "image",
            "source": {"type": "base64", "media_type": part["media_type"], "data": part["data"]}}


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(p["text"] for p in content if p["type"] == "text")


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

    def kwargs(self, params: dict) -> dict:
        """What ``messages.create`` is called with."""
        msgs = params["messages"]
        system = "\n\n".join(_text(m["content"]) for m in msgs if m["role"] == "system")
        stop = params.get("stop")
        fields = {
            "max_tokens": params.get("max_tokens") or DEFAULT_MAX_TOKENS,
            "temperature": params.get("temperature"),
            "top_p": params.get("top_p"),
            "stop_sequences": ([stop] if isinstance(stop, str) else list(stop)) if stop else None,
            "system": system or None,
        }
        messages = [
            m if isinstance(m["content"], str)
            else {"role": m["role"], "content": [wire_part(p) for p in m["content"]]}
            for m in msgs if m["role"] != "system"
        ]
        create = self._client.messages.create
        return {"model": params["model"], "messages": messages, **sdk_kwargs(create, fields)}

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        body = await sdk_call(self._sdk, self._client.messages.create(**self.kwargs(params)))
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
