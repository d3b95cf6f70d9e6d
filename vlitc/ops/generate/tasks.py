"""Self-instruct tasks: ``generate`` (LLaVA-style generation from annotations) and ``rewrite``
(an LLM fixes and tightens another task's samples, in the manner of MiniGPT-4).

Per item the LLM call is wrapped by two pure functions, ``format_request`` and
``parse_response``; the raw text always stays in ``meta["raw"]``, and a response that does not
parse is kept with ``meta["parse_error"]`` (and no turns) so that a filter can drop it visibly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from vlitc.errors import GenerationError
from vlitc.llm.prompts import REWRITE_INSTRUCTIONS
from vlitc.ops.base import OpContext, Task
from vlitc.ops.model import ModelOp
from vlitc.ops.registry import register
from vlitc.records import Record, Sample, grounding, sample

COUNTERS_EVERY = 256  # samples between counter events for the live display

_SAMPLING = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
}


def _generator_meta(ctx: OpContext, name: str) -> dict:
    cfg = ctx.generators.get(name, {})
    return {"name": name, "provider": cfg.get("provider"), "model": cfg.get("model", "mock")}


class _Made(NamedTuple):
    """One record's request: the record, what the request was built from, and the request."""

    record: Record
    info: dict
    request: Any


class _Answer(NamedTuple):
    """One parsed sample of an answer (``keys``: the requests it came from)."""

    made: _Made
    nth: int  # which sample of the request
    text: str
    parsed: Any
    keys: list[str]


@register("task", "generate")
class GenerateTask(ModelOp, Task):
    """Generate conversations with an LLM from a text rendering of each image's annotations.

    Reads: captions, objects, qas, ocr, regions. Writes: turns, meta.context, meta.generator,
    meta.requests, meta.raw, meta.parse_error, meta.annotations.
    """

    version = 1
    reads = ("captions|objects|qas|ocr|regions|image",)
    writes = (
        "turns",
        "meta.context",
        "meta.generator",
        "meta.requests",
        "meta.raw",
        "meta.parse_error",
        "meta.annotations",
    )
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "source": {"type": "string"},
            "generator": {"type": "string"},
            "prompt": {"type": "string", "description": "prompt pack, e.g. llava/conversation"},
            "context": {
                "type": "string",
                "default": "llava",
                "description": "context template: llava, review, region or a .j2 file",
            },
            "n": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
            "examples": {
                "type": "integer",
                "minimum": 0,
                "default": 2,
                "description": "in-context examples drawn per request",
            },
            "parse": {"enum": ["llava_qa", "json_dialog", "answer"], "default": "llava_qa"},
            "repair": {
                "type": "boolean",
                "default": False,
                "description": "one follow-up request when a response does not parse",
            },
            "instructions": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "description": "user turns for parse: answer",
            },
            "pool": {"type": "string", "description": "pool of user turns for parse: answer"},
            "limit": {"type": "integer", "minimum": 1,
                      "description": "generate for at most this many source records; a balance "
                                     "top-up round may take more"},
            "focus": {
                "enum": ["objects", "regions"],
                "default": "objects",
                "description": "what the region context marks",
            },
            **_SAMPLING,
        },
        "required": ["source", "generator", "prompt"],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        refs = super().references()
        refs["generator"] = [self.params["generator"]]
        if self.params.get("pool"):
            refs["pool"] = [self.params["pool"]]
        return refs

    def files(self, ctx: OpContext) -> list[Path]:
        from vlitc.llm.context import template_path
        from vlitc.llm.prompts import pack_files

        return pack_files(self.params["prompt"], ctx.recipe_dir) + [
            template_path(self.params["context"], ctx.recipe_dir)
        ]

    @classmethod
    def template_variables(cls) -> dict[str, frozenset[str]]:
        from vlitc.llm.context import variables

        return {"context template (.j2)": frozenset(variables({"id": ""}))}

    def check(self, ctx: OpContext) -> None:
        """Before anything is built: the prompt pack reads (UTF-8 text files, paired examples)
        and the context template compiles in the sandbox and reads only what it is given."""
        from vlitc.llm.context import check_template
        from vlitc.llm.prompts import load_pack

        load_pack(self.params["prompt"], ctx.recipe_dir)
        check_template(self.params["context"], ctx.recipe_dir)

    # pure parts ---------------------------------------------------------------------------
    def _rng(self, ctx: OpContext, item: str) -> random.Random:
        return random.Random(f"{ctx.seed}:{self.label}:{item}")

    def _focus(self, record: Record, ctx: OpContext) -> dict | None:
        if self.params["context"] != "region":
            return None
        layer = self.params["focus"]
        items = record.get(layer) or []
        if not items:
            return None
        pick = self._rng(ctx, f"{record['id']}:focus").choice(items)
        return {
            "label": pick.get("category") or pick.get("phrase", "an object"),
            "bbox": pick["bbox"],
        }

    def format_request(self, record: Record, ctx: OpContext, pack) -> tuple[dict, object] | None:
        """The context text, the drawn examples and the request for one record (None: no text)."""
        from vlitc.llm import Request
        from vlitc.llm.context import render

        focus = self._focus(record, ctx)
        context = render(record, self.params["context"], ctx.recipe_dir, focus)
        if not context:
            return None
        rng = self._rng(ctx, record["id"])
        messages, chosen = pack.messages(context, self.params["examples"], rng)
        p = self.params
        req = Request(
            messages=messages,
            n=p["n"],
            temperature=p.get("temperature"),
            top_p=p.get("top_p"),
            max_tokens=p.get("max_tokens"),
        )
        info = {"context": context, "examples": chosen, "focus": focus}
        return info, req

    def parse_response(
        self, text: str, record: Record, ctx: OpContext, index: int, instructions: list[str]
    ):
        from vlitc.llm.parse import parse

        instruction = None
        if instructions:
            instruction = self._rng(ctx, f"{record['id']}:{index}:instruction").choice(instructions)
        return parse(text, self.params["parse"], instruction)

    # the run ------------------------------------------------------------------------------
    def _instructions(self, ctx: OpContext) -> list[str]:
        if self.params.get("pool"):
            return [r["template"] for r in ctx.input(f"pool:{self.params['pool']}")]
        return list(self.params.get("instructions") or [])

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        from vlitc.llm.prompts import load_pack

        pack = load_pack(self.params["prompt"], ctx.recipe_dir)
        instructions = self._instructions(ctx)
        if self.params["parse"] == "answer" and not instructions:
            raise GenerationError(f"task {self.label}: parse: answer needs instructions or a pool")
        if self.params.get("limit"):
            records = islice(records, self.params["limit"] + ctx.extra_items)

        def made() -> Iterator[_Made]:
            for rec in records:
                got = self.format_request(rec, ctx, pack)
                if got is None:
                    ctx.count("no_context")
                    continue
                yield _Made(rec, *got)

        answers = self.answers(ctx, made(), lambda m: m.request, lambda m: str(m.record["id"]),
                               count_usage=True)
        rows: Iterator[_Answer] = (
            _Answer(m, i, text, self.parse_response(text, m.record, ctx, i, instructions), [key])
            for m, resp in answers if not resp.error
            for i, (text, key) in enumerate(zip(resp.texts, resp.keys, strict=False))
        )
        if self.params["repair"]:
            rows = self._repaired(rows, ctx, instructions)
        for n, row in enumerate(rows, 1):
            yield self._sample(row, ctx)
            if n % COUNTERS_EVERY == 0:  # parse failures and repairs so far, for the live display
                ctx.emit({"event": "counters", "step": ctx.step_id, "counters": dict(ctx.counters)})
        ctx.emit({"event": "counters", "step": ctx.step_id, "counters": dict(ctx.counters)})

    def _repair_request(self, row: _Answer):
        """One follow-up request for an unparsed answer, or ``None`` when it parsed."""
        from vlitc.llm import Request
        from vlitc.llm.parse import repair_message

        if row.parsed.turns is not None:
            return None
        req = row.made.request
        msgs = req.messages + [
            {"role": "assistant", "content": row.text},
            {"role": "user", "content": repair_message(self.params["parse"],
                                                       row.parsed.error)},
        ]
        return Request(messages=msgs, temperature=0.0, max_tokens=req.max_tokens)

    def _repaired(self, rows: Iterable[_Answer], ctx: OpContext, instructions) -> Iterator[_Answer]:
        """Unparsed answers asked once to be repaired; the repaired text replaces the raw."""
        def ident(row: _Answer) -> str:
            return f"{row.made.record['id']}/{row.nth} (repair)"

        for row, resp in self.answers(ctx, rows, self._repair_request, ident, count_usage=True):
            if resp is None:
                yield row
                continue
            ctx.count("repair_requests")
            if resp.error:
                yield row
                continue
            again = self.parse_response(resp.texts[0], row.made.record, ctx, row.nth, instructions)
            if again.turns is None:
                yield row
                continue
            ctx.count("repaired")
            info = {**row.made.info, "repair": {"raw": row.text, "error": row.parsed.error}}
            yield _Answer(row.made._replace(info=info), row.nth, resp.texts[0], again,
                          [*row.keys, resp.request_id])

    def _sample(self, row: _Answer, ctx: OpContext) -> Sample:
        rec, info, i, text, parsed = row.made.record, row.made.info, row.nth, row.text, row.parsed
        gen = self.params["generator"]
        meta = {
            "record_id": rec["id"],
            "annotations": grounding(rec),
            "context": info["context"],
            "generator": _generator_meta(ctx, gen),
            "prompt": self.params["prompt"],
            "examples": info["examples"],
            "requests": list(row.keys),
            "raw": text,
            "sample_index": i,
        }
        if info.get("focus") is not None:
            meta["focus"] = info["focus"]
        if info.get("repair"):
            meta["repair"] = info["repair"]
        turns = parsed.turns or []
        if parsed.turns is None:
            meta["parse_error"] = parsed.error
            ctx.count("parse_error")
        else:
            ctx.count("samples")
        return sample(
            f"{self.label}/{rec['id']}/{i}",
            self.label,
            turns,
            source=rec.get("source", ""),
            image=rec.get("image"),
            meta=meta,
        )


@register("task", "rewrite")
class RewriteTask(ModelOp, Task):
    """Have an LLM fix and tighten another task's samples, keeping both versions in metadata.

    Reads: turns. Writes: turns, meta.rewrite (original turns, raw text, requests, generator).
    """

    version = 1
    reads = ("turns",)
    writes = ("turns", "meta.rewrite")
    keeps_input_fields = True
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "task": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "tasks whose samples are rewritten",
            },
            "generator": {"type": "string"},
            "instructions": {
                "type": "string",
                "minLength": 1,
                "default": REWRITE_INSTRUCTIONS,
                "description": "system prompt (default: fix, de-duplicate, tighten)",
            },
            **_SAMPLING,
            "temperature": _SAMPLING["temperature"] | {"default": 0.0},
        },
        "required": ["task", "generator"],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        return {"task": list(self.params["task"]), "generator": [self.params["generator"]]}

    def format_request(self, s: Sample):
        """The text to rewrite: a single answer as is, a conversation as Question/Answer blocks."""
        from vlitc.llm import Request

        turns = [t for t in s["turns"] if t["role"] in ("user", "assistant")]
        if len(turns) == 2:
            body = turns[1]["content"]
        else:
            body = "\n===\n".join(
                ("Question:\n" if t["role"] == "user" else "Answer:\n")
                + t["content"].replace("<image>", "").strip()
                for t in turns
            )
        msgs = [
            {"role": "system", "content": self.params["instructions"]},
            {"role": "user", "content": body},
        ]
        return Request(
            messages=msgs,
            temperature=self.params["temperature"],
            top_p=self.params.get("top_p"),
            max_tokens=self.params.get("max_tokens"),
        )

    def parse_response(self, text: str, s: Sample) -> tuple[list[dict] | None, str | None]:
        """New turns with the original user turns kept and the answers replaced."""
        from vlitc.llm.parse import parse_llava_qa

        turns = s["turns"]
        if len(turns) == 2:
            if not text.strip():
                return None, "empty rewrite"
            return [turns[0], {"role": "assistant", "content": text.strip()}], None
        parsed = parse_llava_qa(text)
        if parsed.turns is None:
            return None, parsed.error
        if len(parsed.turns) != len(turns):
            return None, f"rewrite has {len(parsed.turns)} turns, the original {len(turns)}"
        return [
            t if t["role"] == "user" else {"role": "assistant", "content": new["content"]}
            for t, new in zip(turns, parsed.turns, strict=True)
        ], None

    def _samples(self, ctx: OpContext) -> Iterator[Sample]:
        for name in self.params["task"]:
            yield from ctx.input(f"task:{name}")

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        def todo() -> Iterator[Sample]:
            for s in self._samples(ctx):
                if s.get("turns"):
                    yield s
                else:
                    ctx.count("skipped_unparsed")

        for s, resp in self.answers(ctx, todo(), self.format_request, lambda s: str(s["id"]),
                                    count_usage=True):
            if not resp.error:
                yield self._rewritten(s, resp, ctx)

    def _rewritten(self, s: Sample, resp, ctx: OpContext) -> Sample:
        text = resp.texts[0]
        turns, error = self.parse_response(text, s)
        meta = dict(s.get("meta") or {})
        meta["rewrite"] = {
            "from_task": s["task"],
            "from_id": s["id"],
            "original": s["turns"],
            "raw": text,
            "requests": [resp.request_id],
            "generator": _generator_meta(ctx, self.params["generator"]),
        }
        if turns is None:
            meta["rewrite"]["error"] = error
            ctx.count("rewrite_kept_original")
            turns = s["turns"]
        else:
            ctx.count("rewritten")
        out = sample(
            f"{self.label}/{s['id']}",
            self.label,
            turns,
            source=s.get("source", ""),
            image=s.get("image"),
            meta=meta,
        )
        return out
