"""Generator defaults, shared by the generator ops' schemas and the session."""

from typing import Any

DEFAULTS: dict[str, Any] = {
    "max_concurrency": 16,
    "timeout": 120.0,
    "max_retries": 6,
    "retry_backoff": 0.5,
    "on_error": "fail",
    "prompt_cache": True,
}
