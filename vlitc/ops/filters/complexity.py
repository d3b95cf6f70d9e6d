"""LLM instruction complexity: a language model rates how demanding a sample's instructions are,
from 1 (a trivial lookup) to 10 (multi-step reasoning over many details) — the optional LLM score
of the review paper's instruction-complexity indicator."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from vlitc.ops.base import OpContext
from vlitc.ops.model import ModelFilter
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample

SYSTEM = (
    "You rate instructions written for a vision-language assistant by how complex they are to "
    "carry out: 1 means a single trivial lookup (\"Is there a dog?\"), 10 means multi-step "
    "reasoning that combines many details of the image with outside knowledge. Rate the user "
    "turns only, not the answers. End your reply with exactly one line 'SCORE: <1-10>'."
)
SCORE = re.compile(r"^SCORE:\s*(10|[1-9])\s*$")


def parse_score(text: str) -> int | None:
    """The score on the reply's last non-empty line (``SCORE: n``, 1..10), else None."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    m = SCORE.match(lines[-1]) if lines else None
    return int(m.group(1)) if m else None


def instructions_text(s: Sample) -> str:
    return "\n".join(f"- {str(t.get('content', '')).replace(IMAGE_TOKEN, '').strip()}"
                     for t in s.get("turns") or [] if t.get("role") == "user")


@register("filter", "complexity")
class ComplexityFilter(ModelFilter):
    """Score each sample's instructions from 1 to 10 with an LLM (``SCORE: n`` parsed strictly;
    the mean of ``votes`` parsed scores) and, with ``min_score``, drop samples below it.

    The score feeds the release's instruction-complexity indicator. Calls are cached per request,
    so a rebuild or a new ``min_score`` calls nothing. Reads: turns. Writes: stats.complexity,
    stats.scores, stats.usage (requests and tokens of the votes).
    """

    version = 2
    reads = ("turns",)
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "generator": {"type": "string", "minLength": 1},
            "votes": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.0},
            "max_tokens": {"type": "integer", "minimum": 1, "default": 64},
            "system": {"type": "string", "default": SYSTEM},
            "min_score": {"type": "number", "minimum": 1, "maximum": 10,
                          "description": "drop samples scored below this (default: keep all)"},
        },
        "required": ["generator"],
        "additionalProperties": False,
    }
    keep_params = ("min_score",)

    def references(self) -> dict[str, list[str]]:
        return {"generator": [self.params["generator"]]}

    def request(self, s: Sample, ctx: OpContext | None = None) -> Any:
        from vlitc.llm import Request

        return Request(
            messages=[{"role": "system", "content": self.params["system"]},
                      {"role": "user", "content": "Instructions:\n" + instructions_text(s)}],
            temperature=self.params["temperature"],
            max_tokens=self.params["max_tokens"],
            n=self.params["votes"],
        )

    def stats(self, s: Sample, texts: list[str], ctx: OpContext) -> dict:
        scores = [parse_score(t) for t in texts]
        got = [v for v in scores if v is not None]
        ctx.count("complexity_unparsed", len(scores) - len(got))
        return {"complexity": sum(got) / len(got) if got else None, "scores": scores}

    def keep(self, stats: dict) -> str | None:
        floor = self.params.get("min_score")
        if floor is None:
            return None
        if stats.get("complexity") is None:
            return f"complexity not scored ({stats.get('error') or 'no SCORE line parsed'})"
        if stats["complexity"] < floor:
            return f"instruction complexity {stats['complexity']:.1f} < {floor}"
        return None
