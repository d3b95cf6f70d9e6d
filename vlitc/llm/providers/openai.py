"""OpenAI Chat Completions through the official ``openai`` SDK; ``base_url`` reaches any
OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, serving text or vision models).

Image parts become ``image_url`` parts: a base64 ``data:`` URI of the prepared image, or the
image's http(s) URL when its source gives one and the generator asks for URLs; ``detail`` is
sent when the generator sets it.

OpenAI caches prompt prefixes by itself (prompts of 1024 tokens or more): the part of a prompt
read from that cache comes back as ``usage.prompt_tokens_details.cached_tokens`` and is billed at
the cached-input rate; requests put the stable part (system prompt, in-context examples) first,
so that it is the shared prefix.

The body is posted through the SDK's client (its key, base URL, timeout, connection pool and
error types) as plain JSON, and the answer is read with orjson: ``chat.completions.create``
would walk every message against the SDK's TypedDicts and build pydantic models of the answer,
which cost more CPU per request than the rest of a generate step (see
``benchmarks/bench_llm.py``).

The Batch API (``batch: true``): the requests' Chat Completions bodies, exactly what
``complete`` would post, go into a JSONL file (``files.create``, purpose ``batch``) that
``batches.create`` runs within 24 hours; ``batches.retrieve`` tells where it stands and its
output and error files (``files.content``) hold one line per request.


Structured output (the generator's ``response_format``): ``json_schema`` sends the request's JSON
schema as ``response_format: {type: json_schema, json_schema: {name, schema, strict}}`` (OpenAI,
vLLM, llama.cpp's own server, Ollama); ``json_object`` sends JSON mode without a schema;
``json_object_schema`` sends ``{type: json_object, schema}`` (llama-cpp-python's server, which
turns the schema into a grammar)."""

from __future__ import annotations

from typing import Any, Final

import orjson

from vlitc.llm.providers import BatchItem, BatchState, Completion, Provider, api_key, sdk_call
from vlitc.llm.retry import ProviderError
from vlitc.llm.types import format_parts

_LOCAL_KEY = "not-needed"  # OpenAI-compatible local servers ignore the key but the SDK wants one
#: the request fields this provider sends (each a keyword of the SDK's create(), or extra_body)
FIELDS = ("temperature", "top_p", "max_tokens", "seed", "stop", "response_format")
ENDPOINT: Final = "/v1/chat/completions"
#: one batch's limits: 50,000 requests, a 200 MB input file
BATCH_LIMITS = (50_000, 200 * 1024 * 1024)
#: batch statuses after which nothing in the batch changes
ENDED = ("completed", "failed", "expired", "cancelled")


def wire_part(part: dict) -> dict:
    """One content part as Chat Completions takes it."""
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    url = part.get("url") or f"data:{part['media_type']};base64,{part['data']}"
    image: dict = {"url": url}
    if part.get("detail"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def wire_format(response_format: dict | None) -> dict | None:
    """The ``response_format`` field of a request asked for structured output."""
    if response_format is None:
        return None
    mode, schema, _ = format_parts(response_format)
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "json_object_schema":
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    return {k: v for k, v in response_format.items() if k != "mode"}


def wire_messages(messages: list[dict]) -> list[dict]:
    return [
        m if isinstance(m["content"], str)
        else {"role": m["role"], "content": [wire_part(p) for p in m["content"]]}
        for m in messages
    ]


class OpenAIProvider(Provider):
    supports_n = True
    batch_limits = BATCH_LIMITS

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

    def body(self, params: dict, n: int) -> dict:
        """The JSON body of one Chat Completions call (fields left at ``None`` are not sent)."""
        out: dict[str, Any] = {"model": params["model"],
                               "messages": wire_messages(params["messages"])}
        out.update((k, v) for k in FIELDS if (v := params.get(k)) is not None)
        if (fmt := wire_format(params.get("response_format"))) is not None:
            out["response_format"] = fmt
        if n > 1:
            out["n"] = n
        return out

    async def complete(self, params: dict, n: int, first: int = 0) -> Completion:
        raw = await sdk_call(self._sdk, self._client.post(
            "/chat/completions", body=self.body(params, n), cast_to=bytes))
        return _completion(raw)

    async def aclose(self) -> None:
        await self._client.close()

    # the Batch API ----------------------------------------------------------------------------
    def batch_line(self, params: dict, n: int, custom_id: str) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
                "body": self.body(params, n)}

    async def submit_batch(self, lines: list[dict], metadata: dict) -> BatchState:
        data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        f = await sdk_call(self._sdk, self._client.files.create(
            file=("vlitc-batch.jsonl", data, "application/jsonl"), purpose="batch"))
        batch = await sdk_call(self._sdk, self._client.batches.create(
            input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata))
        return _state(batch)

    async def batch_state(self, batch_id: str) -> BatchState:
        return _state(await sdk_call(self._sdk, self._client.batches.retrieve(batch_id)))

    async def batch_results(self, batch_id: str) -> list[BatchItem]:
        batch = await sdk_call(self._sdk, self._client.batches.retrieve(batch_id))
        out = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await sdk_call(self._sdk, self._client.files.content(file_id))
            for line in content.content.splitlines():
                if line.strip():
                    out.append(_item(line))
        return out


def _state(batch: Any) -> BatchState:
    counts = batch.request_counts
    done = int(counts.completed + counts.failed) if counts else 0
    error = None
    if batch.status == "failed":
        errs = getattr(batch.errors, "data", None) or []
        error = "; ".join(f"{e.code or 'error'}: {e.message}" for e in errs) or "batch failed"
    return BatchState(batch.id, batch.status, batch.status in ENDED, done,
                      int(counts.total) if counts else 0, error)


def _item(line: bytes) -> BatchItem:
    """One line of a batch's output or error file."""
    try:
        row = orjson.loads(line)
        custom_id = str(row["custom_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ProviderError(f"malformed batch output line: {exc}", kind="malformed") from None
    resp, err = row.get("response") or {}, row.get("error") or {}
    status = resp.get("status_code")
    if status == 200 and not err:
        try:
            return BatchItem(custom_id, _completion(orjson.dumps(resp.get("body"))))
        except ProviderError as exc:
            return BatchItem(custom_id, error=exc)
    body_err = (resp.get("body") or {}).get("error") if isinstance(resp.get("body"), dict) else None
    message = (body_err or {}).get("message") or err.get("message") or "failed in the batch"
    if err.get("code") == "batch_expired":
        return BatchItem(custom_id, error=ProviderError(
            f"expired: {message}", kind="expired"))
    if status is None:
        return BatchItem(custom_id, error=ProviderError(
            f"{err.get('code') or 'error'}: {message}", kind="batch"))
    return BatchItem(custom_id, error=ProviderError(f"HTTP {status}: {message}", status=int(status)))


def _completion(raw: bytes) -> Completion:
    try:
        body = orjson.loads(raw)
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
        texts = [c["message"]["content"] for c in choices]
        if not texts or any(not isinstance(t, str) for t in texts):
            raise ValueError("no text in choices")
        reasons = [c.get("finish_reason") or "" for c in choices]
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        use = {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            # the automatic prompt cache: the part of prompt_tokens billed at the cached rate
            "cache_read_tokens": int(details.get("cached_tokens") or 0),
        }
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"malformed response body: {exc}", kind="malformed") from None
    return Completion(texts, reasons, use, raw=body)
