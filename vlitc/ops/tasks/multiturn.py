"""Multi-turn packing: several single-turn samples about one image become one conversation.

    tasks:
      conversation:
        kind: pack
        tasks: [vqa, vqa_mc, rec]     # the tasks whose samples are packed
        max_turns: 6                  # question/answer pairs per conversation
        max_tokens: 1024              # approximate token budget per conversation

Samples are grouped by image (content hash, else image file, else source record), shuffled with the seed, and packed in order
into conversations of at most ``max_turns`` pairs and ``max_tokens`` (estimated as characters/4);
what does not fit starts the next conversation. The image placeholder appears once, at the start
of the first user turn. Each packed sample keeps its parts' ids, templates and formats in meta.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from vlitc.ops.base import OpContext, Task
from vlitc.ops.registry import register
from vlitc.ops.tasks.base import rng_for
from vlitc.records import IMAGE_TOKEN, Record, Sample, image_refs_key, sample


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters per token."""
    return (len(text) + 3) // 4


def strip_placeholder(text: str) -> str:
    return text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()


def image_key(s: Sample) -> tuple[str, str]:
    """What identifies a sample's image across sources: its content hash, else its file, else
    (for text-only samples) the source record."""
    img = s.get("image") or {}
    if isinstance(img, list):
        return ("images", image_refs_key(s))
    if img.get("sha256"):
        return ("sha256", img["sha256"])
    if img.get("path"):
        return (str(img.get("root", "")), img["path"])
    return (s.get("source", ""), str(s["meta"].get("record_id", s["id"])))


@register("task", "pack")
class Pack(Task):
    """Pack single-turn samples of other tasks about one image into multi-turn conversations."""

    version = 1
    reads = ("turns", "meta")
    writes = ("turns", "meta.parts", "meta.record_id", "meta.annotations")
    params_schema = {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "uniqueItems": True},
            "max_turns": {"type": "integer", "minimum": 1, "default": 6},
            "min_turns": {"type": "integer", "minimum": 1, "default": 2},
            "max_tokens": {"type": "integer", "minimum": 16, "default": 2048},
            "shuffle": {"type": "boolean", "default": True},
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        return {"task": list(self.params["tasks"])}

    def groups(self, ctx: OpContext) -> dict[tuple[str, str], list[Sample]]:
        out: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for name in self.params["tasks"]:
            for s in ctx.input(f"task:{name}"):
                if len(s["turns"]) != 2:
                    ctx.count("skipped_not_single_turn")
                    continue
                out[image_key(s)].append(s)
        return out

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        for key, parts in sorted(self.groups(ctx).items()):
            parts.sort(key=lambda s: s["id"])
            if self.params["shuffle"]:
                rng_for(ctx, self.label, *key).shuffle(parts)
            for i, chunk in enumerate(self.chunks(parts, ctx)):
                if len(chunk) < int(self.params["min_turns"]):
                    ctx.count("skipped_short_conversation")
                    continue
                ctx.count("conversations")
                ctx.count("turns", len(chunk))
                yield self.pack(f"{self.label}/{chunk[0]['meta'].get('record_id')}/{i}", chunk)

    def chunks(self, parts: list[Sample], ctx: OpContext) -> Iterator[list[Sample]]:
        max_turns = int(self.params["max_turns"])
        budget = int(self.params["max_tokens"])
        chunk: list[Sample] = []
        used = 0
        for s in parts:
            cost = sum(approx_tokens(t["content"]) for t in s["turns"])
            if cost > budget:
                ctx.count("skipped_over_budget")
                continue
            if chunk and (len(chunk) == max_turns or used + cost > budget):
                yield chunk
                chunk, used = [], 0
            chunk.append(s)
            used += cost
        if chunk:
            yield chunk

    def pack(self, sid: str, chunk: list[Sample]) -> Sample:
        turns = []
        for s in chunk:
            user, answer = s["turns"]
            turns += [{"role": "user", "content": strip_placeholder(user["content"])},
                      {"role": "assistant", "content": answer["content"]}]
        first = chunk[0]
        meta = {"record_id": first["meta"].get("record_id"),
                "annotations": first["meta"].get("annotations", {}),
                "template": [s["meta"].get("template") for s in chunk],
                "format": [s["meta"].get("format") for s in chunk],
                "parts": [s["id"] for s in chunk]}
        return sample(sid, self.label, turns, source=first.get("source", ""),
                      image=first.get("image"), meta=meta)
