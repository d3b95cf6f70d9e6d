"""LLM judge: a language model, shown the same description of the image the generator saw (or,
with ``image: true``, a vision model shown the image itself), votes whether a sample is correct;
the majority of ``votes`` verdicts decides."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from vlitc.errors import ConfigurationError
from vlitc.ops.base import OpContext
from vlitc.ops.model import ModelFilter
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample

SYSTEM = (
    "You check training data for a vision-language assistant. You cannot see the image; you are "
    "given a description of it (captions, objects with boxes normalised to 0-1, text in the "
    "image) and a conversation about it. Judge whether every answer in the conversation is "
    "correct and supported by the description: no invented objects, counts, positions, text or "
    "attributes, and no contradictions. End your reply with exactly one line, either "
    "'VERDICT: correct' or 'VERDICT: incorrect'."
)
VISION_SYSTEM = (
    "You check training data for a vision-language assistant. You are shown an image and a "
    "conversation about it (and, when there is one, a description of the image). Judge from "
    "the image whether every answer in the conversation is correct: no objects, counts, "
    "positions, text or attributes that the image does not show, and no contradictions. End "
    "your reply with exactly one line, either 'VERDICT: correct' or 'VERDICT: incorrect'."
)
PROMPT = "Image description:\n{context}\n\nConversation:\n{conversation}\n\nIs the conversation correct?"
VERDICT = re.compile(r"^VERDICT:\s*(correct|incorrect)\s*$")


def parse_verdict(text: str) -> str:
    """``correct``, ``incorrect``, or ``unparsed``: the last non-empty line must be exactly a
    verdict line, and no other line may carry a verdict."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return "unparsed"
    m = VERDICT.match(lines[-1])
    if not m or any("VERDICT" in ln.upper() for ln in lines[:-1]):
        return "unparsed"
    return m.group(1)


def fallback_context(ann: dict) -> str:
    """A plain description from a sample's annotations, when it carries no generator context."""
    lines = []
    for o in ann.get("objects") or []:
        lines.append(f"{o['category']}: {[round(float(v), 1) for v in o['bbox']]}")
    if ann.get("ocr"):
        lines.append("Text in the image: " + "; ".join(ann["ocr"]))
    if ann.get("width"):
        lines.insert(0, f"Image size: {ann['width']}x{ann['height']} pixels; boxes in pixels.")
    return "\n".join(lines) or "(no description available)"


def conversation(s: Sample) -> str:
    return "\n".join(
        f"{'User' if t.get('role') == 'user' else 'Assistant'}: "
        f"{str(t.get('content', '')).replace(IMAGE_TOKEN, '').strip()}"
        for t in s.get("turns") or []
    )


@register("filter", "judge")
class JudgeFilter(ModelFilter):
    """Drop samples that an LLM judge finds incorrect for their image: ``votes`` samples of the
    ``generator`` (temperature ``temperature``), each ending in a strict ``VERDICT: correct`` or
    ``VERDICT: incorrect`` line; anything else is *unparsed* and counts as ``unparsed`` says
    (``abstain``: no vote, ``incorrect``, ``correct``). The majority of counted votes wins; a tie
    or no vote at all keeps the sample only with ``tie: keep``.

    The judge sees ``meta.context`` (the description the generator saw) or, without one, the
    annotated objects and OCR. Calls are cached per request by the LLM layer, so a rebuild or a
    policy change calls nothing. Reads: turns, meta.context, meta.annotations.
    Writes: stats.votes, stats.raw, stats.usage (requests and tokens of the votes).
    """

    version = 2
    reads = ("turns", "meta.context|meta.annotations")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "generator": {"type": "string", "minLength": 1},
            "votes": {"type": "integer", "minimum": 1, "maximum": 15, "default": 3},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.7},
            "max_tokens": {"type": "integer", "minimum": 1, "default": 256},
            "system": {"type": "string", "default": SYSTEM,
                       "description": "the judge's instructions (with image: true the default "
                                      "ones say it sees the image)"},
            "image": {"type": "boolean", "default": False,
                      "description": "the judge sees the sample's image (a vision: true "
                                     "generator): the verdict comes from the pixels"},
            "prompt": {"type": "string", "default": PROMPT,
                       "description": "a template with {context} and {conversation}"},
            "unparsed": {"enum": ["abstain", "incorrect", "correct"], "default": "abstain"},
            "tie": {"enum": ["drop", "keep"], "default": "drop"},
        },
        "required": ["generator"],
        "additionalProperties": False,
    }
    keep_params = ("unparsed", "tie")

    def references(self) -> dict[str, list[str]]:
        return {"generator": [self.params["generator"]]}

    def request(self, s: Sample, ctx: OpContext | None = None) -> Any:
        from vlitc.llm import Request

        meta = s.get("meta") or {}
        context = meta.get("context") or fallback_context(meta.get("annotations") or {})
        try:
            user = self.params["prompt"].format(context=context, conversation=conversation(s))
        except (KeyError, IndexError) as e:
            raise ConfigurationError(
                f"judge: prompt template has an unknown field {e}; use {{context}} and {{conversation}}"
            ) from None
        system = self.params["system"]
        content: Any = user
        if self.params["image"] and s.get("image") and ctx is not None:
            from vlitc.ops.generate.tasks import with_image

            system = VISION_SYSTEM if system == SYSTEM else system
            content = with_image(s["image"], user, ctx)
        return Request(
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": content}],
            temperature=self.params["temperature"],
            max_tokens=self.params["max_tokens"],
            n=self.params["votes"],
        )

    def stats(self, s: Sample, texts: list[str], ctx: OpContext) -> dict:
        votes = [parse_verdict(t) for t in texts]
        ctx.count("judge_unparsed", votes.count("unparsed"))
        return {"votes": votes, "raw": list(texts)}

    def tally(self, votes: list[str]) -> tuple[int, int]:
        policy = self.params["unparsed"]
        fixed = [policy if v in ("unparsed", "error") and policy != "abstain" else v for v in votes]
        return fixed.count("correct"), fixed.count("incorrect")

    def keep(self, stats: dict) -> str | None:
        if stats.get("error"):  # a failed call (on_error: skip): dropped, retried next build
            return f"judge failed: {stats['error']}"
        yes, no = self.tally(stats["votes"])
        if yes > no:
            return None
        if yes == no and self.params["tie"] == "keep":
            return None
        other = len(stats["votes"]) - yes - no
        tail = f", {other} unparsed" if other else ""
        if yes == no:
            return f"judge split {yes}-{no}{tail} (ties drop)"
        return f"judge: {no} of {len(stats['votes'])} votes incorrect ({yes} correct{tail})"
