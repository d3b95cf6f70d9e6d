"""Anthropic Messages API through the official ``anthropic`` SDK (one sample per call).

Sampling parameters map onto what the installed SDK's ``messages.create`` names; a parameter
the SDK no longer names (anthropic 2.x dropped ``temperature`` and ``top_p`` from the
signature) is sent in ``extra_body``, i.e. in the JSON body as the Messages API reads it.
``stop`` becomes ``stop_sequences``; ``seed`` has no Messages API equivalent and is not sent (it
stays in the request key). A request's ``response_format`` (a JSON schema) is sent the way the
generator's ``response_format`` says: ``tool`` (the default) forces a tool whose input schema is
the schema, and the tool call's input is the reply; ``json_schema`` asks for Anthropic's
structured outputs (``output_config.format``); ``prefill`` starts the assistant's reply with
``{``, which the reply's text then continues. There is no ``n``: ``n`` samples
cost ``n`` calls. Image parts become ``image`` blocks with a base64 source and media type (or a
``url`` source when the generator asks for URLs and the image has one).

Prompt caching (``prompt_cache: true``, the default): the system prompt, and the last message of
the request's stable prefix (``cache_prefix`` leading messages: the system prompt and the
in-context examples), carry a ``cache_control: {type: ephemeral}`` breakpoint, so that requests
repeating that prefix read it at the cache rate (``usage.cache_read_input_tokens``) after the
first one wrote it (``cache_creation_input_tokens``). A breakpoint only changes the billing,
never the answer, so it is not part of the request key. ``prompt_tokens`` counts the whole
prompt (the API's ``input_tokens`` plus both cache counts).

Message Batches (``batch: true``): each request's ``messages.create`` body (breakpoints
included) becomes the ``params`` of one batch request (``messages.batches.create``);
``retrieve`` tells where the batch stands and ``results`` streams one result per request
(succeeded, errored, canceled or expired).
"""

from __future__ import annotations

import json
from typing import Any

from vlitc.llm.defaults import DEFAULTS
from vlitc.llm.providers import (
    BatchItem,
    BatchState,
    Completion,
    Provider,
    api_key,
    flat_body,
    sdk_call,
    sdk_kwargs,
)
from vlitc.llm.retry import ProviderError
from vlitc.llm.types import format_parts

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens
#: one batch's limits: 100,000 requests, 256 MB
BATCH_LIMITS = (100_000, 256 * 1024 * 1024)
#: the HTTP status the Messages API gives each error type (for the retry decision)
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}


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


EPHEMERAL = {"type": "ephemeral"}
PREFILL = "{"  # the start of the reply under response_format: prefill


def _breakpoint(message: dict) -> dict:
    """``message`` with a cache breakpoint on its last content block."""
    content = message["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
    return {"role": message["role"], "content": blocks}


class AnthropicProvider(Provider):
    supports_n = False
    batch_limits = BATCH_LIMITS

    def __init__(self, name: str, config: dict):
        import anthropic
        from anthropic import AsyncAnthropic

        self._sdk = anthropic
        self.prompt_cache = bool(config.get("prompt_cache", DEFAULTS["prompt_cache"]))

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
        system: str | list | None = "\n\n".join(
            _text(m["content"]) for m in msgs if m["role"] == "system")
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
        prefill = self._structured(params.get("response_format"), fields, messages)
        if self.prompt_cache:
            if system:
                fields["system"] = [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
            stable = int(params.get("cache_prefix") or 0) - sum(
                m["role"] == "system" for m in msgs)
            if 0 < stable < len(messages):
                messages[stable - 1] = _breakpoint(messages[stable - 1])
        if prefill:
            messages.append({"role": "assistant", "content": PREFILL})
        create = self._client.messages.create
        return {"model": params["model"], "messages": messages, **sdk_kwargs(create, fields)}

    @staticmethod
    def _structured(response_format: dict | None, fields: dict, messages: list) -> bool:
        """Add the request's structured output to ``fields``; whether the reply is prefilled."""
        if response_format is None:
            return False
        mode, schema, name = format_parts(response_format)
        schema = schema or {"type": "object"}
        if mode == "tool":
            fields["tools"] = [{"name": name, "input_schema": schema,
                                "description": "Give your reply as this tool's input."}]
            fields["tool_choice"] = {"type": "tool", "name": name}
        elif mode == "json_schema":
            fields["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return mode == "prefill" and bool(messages) and messages[-1]["role"] == "user"

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        kwargs = self.kwargs(params)
        body = await sdk_call(self._sdk, self._client.messages.create(**kwargs))
        prefilled = kwargs["messages"][-1]["role"] == "assistant"
        return _completion(body, PREFILL if prefilled else "")

    async def aclose(self) -> None:
        await self._client.close()

    # Message Batches ----------------------------------------------------------------------------
    def batch_line(self, params: dict, n: int, custom_id: str) -> dict:
        return {"custom_id": custom_id, "params": flat_body(self.kwargs(params))}

    async def submit_batch(self, lines: list[dict], metadata: dict) -> BatchState:
        batches = self._client.messages.batches
        return _state(await sdk_call(self._sdk, batches.create(requests=lines)))  # type: ignore[arg-type]

    async def batch_state(self, batch_id: str) -> BatchState:
        return _state(await sdk_call(self._sdk, self._client.messages.batches.retrieve(batch_id)))

    async def batch_results(self, batch_id: str) -> list[BatchItem]:
        async def read() -> list[BatchItem]:
            return [_item(r) async for r in await self._client.messages.batches.results(batch_id)]

        return await sdk_call(self._sdk, read())


def _completion(body, prefix: str = "") -> Completion:
    """The reply: its text blocks (after ``prefix``, the prefilled start), or the input of the
    tool call it was made to give."""
    try:
        if not body.content:
            raise ValueError("no content")
        text = "".join(b.text for b in body.content if getattr(b, "type", "") == "text")
        calls = [b for b in body.content if getattr(b, "type", "") == "tool_use"]
        if calls and not text.strip():
            text = json.dumps(calls[0].input, ensure_ascii=False)
        elif prefix:
            text = prefix + text
        if not isinstance(text, str):
            raise ValueError("no text content")
        u = body.usage
        read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
        write = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
        use = {
            "prompt_tokens": int(u.input_tokens or 0) + read + write,
            "completion_tokens": int(u.output_tokens or 0),
            "cache_read_tokens": read,
            "cache_write_tokens": write,
        }
        return Completion([text], [body.stop_reason or ""], use, raw=body)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ProviderError(f"malformed response body: {exc}", kind="malformed") from None


def _state(batch: Any) -> BatchState:
    c = batch.request_counts
    done = c.succeeded + c.errored + c.canceled + c.expired
    return BatchState(batch.id, batch.processing_status, batch.processing_status == "ended",
                      done, done + c.processing)


def _item(row: Any) -> BatchItem:
    result = row.result
    if result.type == "succeeded":
        try:
            return BatchItem(row.custom_id, _completion(result.message))
        except ProviderError as exc:
            return BatchItem(row.custom_id, error=exc)
    if result.type == "errored":
        err = getattr(result.error, "error", None)
        kind, message = getattr(err, "type", "api_error"), getattr(err, "message", "errored")
        status = ERROR_STATUS.get(kind, 500)
        return BatchItem(row.custom_id, error=ProviderError(f"HTTP {status}: {kind}: {message}",
                                                            status=status))
    return BatchItem(row.custom_id, error=ProviderError(
        f"{result.type} in the batch", kind="expired" if result.type == "expired" else "canceled"))
