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
from typing import ClassVar

from vlitc.errors import GenerationError
from vlitc.llm.prompts import REWRITE_INSTRUCTIONS
from vlitc.ops.base import OpContext, Task
from vlitc.ops.registry import register
from vlitc.records import Record, Sample, grounding, sample

CHUNK = 512  # items handed to the generator at once (all in flight together, up to its limits)

_SAMPLING = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
}


def _chunks(items: Iterable, size: int = CHUNK) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _generator_meta(ctx: OpContext, name: str) -> dict:
    cfg = ctx.generators.get(name, {})
    return {"name": name, "provider": cfg.get("provider"), "model": cfg.get("model", "mock")}


def _on_error(ctx: OpContext, name: str) -> str:
    return ctx.generators.get(name, {}).get("on_error", "fail")


def _tally(ctx: OpContext, responses) -> None:
    """What the answered requests cost, from their recorded usage (the same whether a response
    came fresh or from the cache, so the report of a rebuild matches): requests and tokens."""
    for r in responses:
        if not r.error:
            ctx.count("llm_requests")
            ctx.count("prompt_tokens", int(r.usage.get("prompt_tokens", 0)))
            ctx.count("completion_tokens", int(r.usage.get("completion_tokens", 0)))


def _failed(ctx: OpContext, gen: str, item_id: str, error: str, failures: list) -> None:
    """A request that finally failed: stop (``on_error: fail``) or skip the item, counted."""
    if _on_error(ctx, gen) == "fail":
        raise GenerationError(f"{error} (item {item_id}; set on_error: skip to go on without it)")
    ctx.count("llm_failed")
    failures.append({"item": item_id, "error": error})


@register("task", "generate")
class GenerateTask(Task):
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
        client = ctx.client(self.params["generator"])
        failures: list[dict] = []
        if self.params.get("limit"):
            records = islice(records, self.params["limit"] + ctx.extra_items)
        for batch in _chunks(records):
            yield from self._run_batch(batch, ctx, pack, client, instructions, failures)
        if failures:
            ctx.note("llm_failed", failures[:100])

    def _run_batch(self, batch, ctx, pack, client, instructions, failures) -> Iterator[Sample]:
        todo = []
        for rec in batch:
            made = self.format_request(rec, ctx, pack)
            if made is None:
                ctx.count("no_context")
                continue
            todo.append((rec, *made))
        responses = client.run([req for _, _, req in todo], step=ctx.step_id)
        _tally(ctx, responses)
        out: list[tuple] = []  # (record, info, request, index, text, parsed, keys)
        gen = self.params["generator"]
        for (rec, info, req), resp in zip(todo, responses, strict=True):
            if resp.error:
                _failed(ctx, gen, rec["id"], resp.error, failures)
                continue
            for i, text in enumerate(resp.texts):
                parsed = self.parse_response(text, rec, ctx, i, instructions)
                out.append((rec, info, req, i, text, parsed, resp.keys[i]))
        if self.params["repair"]:
            out = self._repair(out, ctx, client, instructions)
        for rec, info, _req, i, text, parsed, keys in out:
            yield self._sample(rec, info, i, text, parsed, keys, ctx)
        # parse failures and repairs so far, for the live display
        ctx.emit({"event": "counters", "step": ctx.step_id, "counters": dict(ctx.counters)})

    def _repair(self, out: list, ctx: OpContext, client, instructions) -> list:
        """One follow-up request per unparsed response; the repaired text replaces the raw."""
        from vlitc.llm import Request
        from vlitc.llm.parse import repair_message

        bad = [j for j, row in enumerate(out) if row[5].turns is None]
        reqs = []
        for j in bad:
            _rec, _info, req, _i, text, parsed, _key = out[j]
            msgs = req.messages + [
                {"role": "assistant", "content": text},
                {
                    "role": "user",
                    "content": repair_message(self.params["parse"], parsed.error),
                },
            ]
            reqs.append(Request(messages=msgs, temperature=0.0, max_tokens=req.max_tokens))
        fixed = client.run(reqs, step=ctx.step_id) if reqs else []
        _tally(ctx, fixed)
        out = list(out)
        for j, resp in zip(bad, fixed, strict=True):
            rec, info, req, i, text, parsed, key = out[j]
            ctx.count("repair_requests")
            if resp.error:
                continue
            again = self.parse_response(resp.texts[0], rec, ctx, i, instructions)
            if again.turns is not None:
                ctx.count("repaired")
                info = {**info, "repair": {"raw": text, "error": parsed.error}}
                out[j] = (rec, info, req, i, resp.texts[0], again, [key, resp.request_id])
        return out

    def _sample(self, rec, info, i, text, parsed, keys, ctx) -> Sample:
        gen = self.params["generator"]
        meta = {
            "record_id": rec["id"],
            "annotations": grounding(rec),
            "context": info["context"],
            "generator": _generator_meta(ctx, gen),
            "prompt": self.params["prompt"],
            "examples": info["examples"],
            "requests": keys if isinstance(keys, list) else [keys],
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
class RewriteTask(Task):
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
        client = ctx.client(self.params["generator"])
        failures: list[dict] = []
        for batch in _chunks(self._samples(ctx)):
            todo = [s for s in batch if s.get("turns")]
            ctx.count("skipped_unparsed", len(batch) - len(todo))
            responses = client.run([self.format_request(s) for s in todo], step=ctx.step_id)
            _tally(ctx, responses)
            for s, resp in zip(todo, responses, strict=True):
                if resp.error:
                    _failed(ctx, self.params["generator"], s["id"], resp.error, failures)
                    continue
                yield self._rewritten(s, resp, ctx)
        if failures:
            ctx.note("llm_failed", failures[:100])

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
