"""Generator ops: LLM endpoints a recipe declares under ``generators`` and tasks refer to.

Only params that change responses (model, sampling defaults, image preparation, mock behaviour)
enter the keys of the steps that use a generator; key variable names, limits, retries and
prices do not. ``base_url`` does, unless it is the provider's own endpoint or the generator
declares a ``model_revision`` (then that names the model instead).
"""

from __future__ import annotations

from typing import ClassVar

from vlitc.llm.defaults import DEFAULTS
from vlitc.llm.types import RESPONSE_MODES
from vlitc.llm.vision import PREP_SCHEMA
from vlitc.ops.base import Generator, OpContext
from vlitc.ops.registry import register

_NUM = {"type": "number"}
COMMON_PROPS: dict = {
    "model": {"type": "string", "minLength": 1, "description": "model name sent to the provider"},
    "base_url": {
        "type": "string",
        "minLength": 1,
        "description": "endpoint of an API-compatible server (vLLM, Ollama, llama.cpp)",
    },
    "api_key_env": {
        "type": "string",
        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
        "description": "name of the environment variable holding the key",
    },
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "seed": {"type": "integer"},
    "stop": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    "max_concurrency": {"type": "integer", "minimum": 1, "default": DEFAULTS["max_concurrency"]},
    "rpm": {"type": "number", "exclusiveMinimum": 0, "description": "requests per minute"},
    "tpm": {"type": "number", "exclusiveMinimum": 0, "description": "tokens per minute"},
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": DEFAULTS["timeout"],
        "description": "seconds per call",
    },
    "max_retries": {"type": "integer", "minimum": 0, "default": DEFAULTS["max_retries"]},
    "retry_backoff": {
        "type": "number",
        "minimum": 0,
        "default": DEFAULTS["retry_backoff"],
        "description": "first backoff delay in seconds (doubles per retry)",
    },
    "prices": {
        "type": "object",
        "additionalProperties": False,
        "required": ["input", "output"],
        "properties": {
            "input": {**_NUM, "minimum": 0},
            "output": {**_NUM, "minimum": 0},
            "cache_read": {**_NUM, "minimum": 0,
                           "description": "prompt tokens read from the provider's prompt cache "
                                          "(default: the input rate)"},
            "cache_write": {**_NUM, "minimum": 0,
                            "description": "prompt tokens written to the provider's prompt "
                                           "cache (default: the input rate)"},
            "image_tokens": {"type": "integer", "minimum": 0,
                             "description": "flat input tokens per image (any provider)"},
            "image_base_tokens": {"type": "integer", "minimum": 0,
                                  "description": "OpenAI tile rule: tokens per image"},
            "image_tile_tokens": {"type": "integer", "minimum": 0,
                                  "description": "OpenAI tile rule: tokens per 512-px tile"},
            "image_pixels_per_token": {**_NUM, "exclusiveMinimum": 0,
                                       "description": "Anthropic pixel rule (default 750)"},
            "batch": {**_NUM, "minimum": 0, "maximum": 1,
                      "description": "share of these prices a batch request pays (default 0.5, "
                                     "both providers' batch discount)"},
        },
        "description": "USD per million input/output/cached tokens (overrides the table) and "
                       "how images count in tokens (overrides the provider's rule)",
    },
    "vision": {
        "type": "boolean",
        "description": "the model reads images (tasks and judges with image: true need it; "
                       "default false)",
    },
    "image": PREP_SCHEMA,
    "model_revision": {
        "type": "string",
        "minLength": 1,
        "description": "names the model's weights in the request key (instead of base_url)",
    },
    "on_error": {
        "enum": ["fail", "skip"],
        "default": DEFAULTS["on_error"],
        "description": "a request that finally fails stops the build, or skips its item",
    },
}
#: how a generator sends through its provider's batch API (OpenAI Batch, Anthropic Message
#: Batches): how it sends, never what comes back, so none of them is in a key
BATCH_PROPS: dict = {
    "batch": {
        "type": "boolean",
        "default": False,
        "description": "send the requests through the provider's batch API at the batch price "
                       "(half); the batch ids are kept in the cache, so a later build resumes "
                       "an open batch instead of sending it again",
    },
    "batch_poll": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 30,
        "description": "seconds between looks at an open batch's status",
    },
    "batch_wait": {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "seconds a build waits for its open batches before it stops (they stay "
                       "open, and the next build collects them); default: until they end",
    },
    "batch_max_requests": {
        "type": "integer",
        "minimum": 1,
        "description": "requests per batch, at most the provider's limit (OpenAI 50,000, "
                       "Anthropic 100,000); more are split over several batches",
    },
}
#: params that never change a response
NOT_IN_KEY = (
    "api_key_env",
    "max_concurrency",
    "rpm",
    "tpm",
    "timeout",
    "max_retries",
    "retry_backoff",
    "prices",
    "on_error",
    "latency",
    "supports_n",
    "prompt_cache",
    *BATCH_PROPS,
)


def _response_format(provider: str, ways: str) -> dict:
    modes = RESPONSE_MODES[provider]
    return {"enum": list(modes), "default": modes[0],
            "description": "how a task that parses JSON (parse: json_dialog) asks for it: "
                           f"{ways}; none asks in the prompt only"}


def _schema(extra: dict | None = None, required: tuple[str, ...] = ("model",)) -> dict:
    return {
        "type": "object",
        "properties": {**COMMON_PROPS, **(extra or {})},
        "required": list(required),
        "additionalProperties": False,
    }


class _Endpoint(Generator):
    key_exclude: ClassVar[tuple[str, ...]] = NOT_IN_KEY
    reads = ()
    writes = ()

    def config(self) -> dict:
        """The generator's settings with defaults filled in (what the LLM session reads)."""
        return {**DEFAULTS, **self.params, "provider": self.name}

    def key_params(self) -> dict:
        from vlitc.llm.types import identity

        out = super().key_params()
        if "base_url" in out and "endpoint" not in identity(self.name, self.params):
            out.pop("base_url")
        # the provider's own way of asking for JSON is what requests were keyed by before the
        # option existed; only another way changes the steps that use the generator
        modes = RESPONSE_MODES.get(self.name)
        if modes and out.get("response_format") == modes[0]:
            out.pop("response_format")
        return out


@register("generator", "openai")
class OpenAIGenerator(_Endpoint):
    """An OpenAI Chat Completions endpoint, or any OpenAI-compatible server through ``base_url``.
    With ``batch: true`` the requests go through the OpenAI Batch API (a JSONL file uploaded,
    one batch per ``batch_max_requests``) at the batch price. A task that parses JSON sends its
    JSON schema as ``response_format`` (``json_schema``, or another way the server takes)."""

    version = 1
    params_schema = _schema({
        **BATCH_PROPS,
        "response_format": _response_format(
            "openai", "json_schema sends the JSON schema (OpenAI, vLLM, llama.cpp's server, "
            "Ollama), json_object JSON mode without it, json_object_schema JSON mode with a "
            "schema field (llama-cpp-python's server)"),
        "supports_n": {
            "type": "boolean",
            "description": "whether the server returns n choices per call (OpenAI's endpoint "
                           "does; llama.cpp does not): false sends one call per sample; `vlitc "
                           "plan` counts n calls per item on other servers unless this is true",
        },
    })


@register("generator", "anthropic")
class AnthropicGenerator(_Endpoint):
    """An Anthropic Messages API endpoint (one sample per call, so ``n`` samples cost ``n``
    calls; ``max_tokens`` defaults to 1024; ``seed`` is not sent). With ``prompt_cache`` (the
    default) the system prompt and the in-context examples carry ``cache_control`` breakpoints,
    so a repeated prefix is billed at the cache-read rate. With ``batch: true`` the requests go
    through Message Batches at the batch price. A task that parses JSON gets it through a
    forced tool call by default (``response_format``)."""

    version = 1
    params_schema = _schema({
        **BATCH_PROPS,
        "response_format": _response_format(
            "anthropic", "tool forces a tool whose input schema is the JSON schema, json_schema "
            "asks for structured outputs (output_config, recent models), prefill starts the "
            "reply with {"),
        "prompt_cache": {
            "type": "boolean",
            "default": DEFAULTS["prompt_cache"],
            "description": "cache_control breakpoints on the system prompt and the in-context "
                           "examples (billing only: answers and request keys do not change)",
        },
    })


@register("generator", "mock")
class MockGenerator(_Endpoint):
    """A deterministic offline generator for tests and dry runs: template, scripted or echo."""

    version = 1
    params_schema = _schema(
        {
            "model": {"type": "string", "default": "mock"},
            "template": {
                "type": "string",
                "description": "Jinja2: last_user, system, index, messages",
            },
            "responses": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "latency": {"type": "number", "minimum": 0, "description": "seconds per call"},
            "fail": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "attempts": {"type": "integer", "minimum": 0},
                },
            },
        },
        required=(),
    )

    def config(self) -> dict:
        return {"model": "mock", **super().config()}

    def check(self, ctx: OpContext) -> None:
        """The script compiles in the template sandbox (validated before anything runs)."""
        from vlitc.templating import RAW_ENV, TemplateProblem, located_error, template

        if isinstance(self.params.get("template"), str):
            try:
                template(self.params["template"], RAW_ENV)
            except TemplateProblem as e:
                raise located_error(e, f"generator {self.label!r} template",
                                    ctx.locate_value) from None
