"""Existing conversations passed through as samples: instruction data read by the ``llava``,
``sharegpt`` and ``generic`` sources (with or without images), so that every filter, balance and
export works on it.

    tasks:
      llava_158k:
        kind: conversations
        source: llava_joined      # e.g. a join of a llava source (id: image) with COCO annotations
        images: any               # any | required | none

Each entry of a record's ``conversations`` layer becomes one sample that keeps its original id
(``ids: task`` prefixes the task name), the file and line it was read from, its system prompt and
the item's plain fields (``meta.provenance``), and the record's annotations (objects, captions,
OCR), so that the grounded filters check imported answers as they check generated ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from vlitc.ops.base import OpContext, Task, cycle_collector_off
from vlitc.ops.registry import register
from vlitc.records import (
    IMAGE_TOKEN,
    Record,
    Sample,
    grounding,
    images_of,
    is_sound,
    sample,
    structure_problems,
)

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
_SCHEMA_IMAGES = {"enum": ["any", "required", "none"], "default": "any",
                  "description": "which records pass: any, only those with images, only text"}


def where_parts(where: str) -> tuple[str, int | None, int | None]:
    """``file:line`` (JSON Lines, Parquet rows) or ``file[index]`` (JSON arrays) as file, line
    and index (a file name may itself hold ``:`` or ``[``: only the last part counts)."""
    if where.endswith("]"):
        i = where.rfind("[")
        if i >= 0 and where[i + 1:-1].isdecimal():
            return where[:i], None, int(where[i + 1:-1])
    else:
        head, sep, tail = where.rpartition(":")
        if sep and tail.isdecimal():
            return head, int(tail), None
    return where, None, None


def provenance(rec: Record, d: dict) -> dict[str, Any]:
    """Where an imported conversation came from: source, file and line (JSON Lines, Parquet
    rows) or item index (JSON arrays), and the item's own plain fields."""
    file, line, index = where_parts(str(d.get("where", "")))
    out: dict[str, Any] = {"source": rec.get("source", ""), "file": file}
    if line is not None:
        out["line"] = line
    if index is not None:
        out["index"] = index
    if d.get("meta"):
        out["fields"] = d["meta"]
    return out


@register("task", "conversations")
class Conversations(Task):
    """Pass existing conversations (the ``conversations`` layer of llava, sharegpt and generic
    sources) through as samples, with or without images (``images``), keeping each one's
    original id (``ids: original``; ``task`` prefixes the task name), file and line, system
    prompt and plain fields in ``meta.provenance``, and the record's annotations (joined by
    image id) for the grounded filters. A sample that would be malformed is skipped and counted.
    ``keep_labels`` takes task and source names from the data (re-ingesting a vlitc release
    keeps its mix); by default samples belong to this task and the record's source.
    """

    version = 1
    reads: ClassVar[tuple[str, ...]] = ("image", "conversations")
    writes = ("turns", "meta.record_id", "meta.original_id", "meta.provenance", "meta.annotations")
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1},
            "images": _SCHEMA_IMAGES,
            "ids": {"enum": ["original", "task"], "default": "original",
                    "description": "sample id: the conversation's own id, or task/id"},
            "keep_labels": {"type": "boolean", "default": False,
                            "description": "take each sample's task and source names from the "
                                           "data when it records them (a vlitc Parquet release)"},
        },
        "required": ["source"],
        "additionalProperties": False,
    }
    def shardable(self) -> bool:
        return True  # each record's samples come from that record alone

    def image_rule(self) -> str:
        """Which records pass: ``any``, ``required`` (with images) or ``none`` (text only)."""
        return str(self.params["images"])

    def passes(self, rec: Record, ctx: OpContext) -> bool:
        want = self.image_rule()
        has = rec.get("image") is not None
        if want == "none" and has:
            ctx.count("skipped_has_image")
            return False
        if want == "required" and not has:
            ctx.count("skipped_no_image")
            return False
        return True

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        with cycle_collector_off():
            yield from self._run(records, ctx)

    def _run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        n_in = n_out = 0
        for rec in records:
            n_in += 1
            if not self.passes(rec, ctx):
                continue
            dialogues = rec.get("conversations") or []
            if not dialogues:
                ctx.count("skipped_no_conversation")
                continue
            ann = grounding(rec)
            for d in dialogues:
                s = self.make(rec, d, ann, ctx)
                if s is not None:
                    n_out += 1
                    yield s
            if n_in % 10000 == 0:
                ctx.emit({"event": "progress", "step": ctx.step_id, "done": n_in})
        if n_out:
            ctx.count("samples", n_out)
        ctx.count("records", n_in)

    def make(self, rec: Record, d: dict, ann: dict, ctx: OpContext) -> Sample | None:
        turns = []
        for t in d.get("turns") or []:
            role, text = t.get("role", ""), t.get("content", "")
            if role != "system":
                turns.append({"role": _ROLES.get(role, role),
                              "content": (text if type(text) is str else str(text)).strip()})
        if not rec.get("image") and any(IMAGE_TOKEN in t["content"] for t in turns):
            ctx.count("skipped_image_placeholder")
            return None
        did = str(d.get("id", rec["id"]))
        meta: dict[str, Any] = {"record_id": rec["id"], "original_id": did, "template": None,
                                "format": "free", "annotations": ann,
                                "provenance": provenance(rec, d)}
        if d.get("system"):
            meta["system"] = d["system"]
        if rec.get("image") is None and (rec.get("meta") or {}).get("image_file"):
            meta["image_file"] = rec["meta"]["image_file"]  # named, not read: decontamination uses it
        split = (d.get("meta") or {}).get("split")
        if split in ("train", "validation"):
            meta["split"] = split
        sid = did if self.params["ids"] == "original" else f"{self.label}/{did}"
        task, source = self.label, rec.get("source", "")
        if self.params.get("keep_labels"):
            fields = d.get("meta") or {}
            task = str(fields.get("task") or task)
            source = str(fields.get("source") or source)
        s = sample(sid, task, turns, source=source, image=rec.get("image"), meta=meta, own=True)
        if not is_sound(s) and structure_problems(s):
            ctx.count("skipped_bad_structure")
            return None
        if len(images_of(s)) > 1:
            ctx.count("multi_image_samples")
        return s


@register("task", "text_only")
class TextOnly(Conversations):
    """Pass the conversations of records without an image through as text-only samples (the
    ``conversations`` task with ``images: none``; records with an image are counted)."""

    version = 2
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1},
            "ids": {"enum": ["original", "task"], "default": "task",
                    "description": "sample id: task/id (default), or the conversation's own id"},
        },
        "required": ["source"],
        "additionalProperties": False,
    }

    def image_rule(self) -> str:
        return "none"
