"""Self-instruct tasks: ``generate`` (LLaVA-style generation from annotations) and ``rewrite``
(an LLM fixes and tightens another task's samples, in the manner of MiniGPT-4).

With ``image: true`` the generator also sees the image (a vision model: ShareGPT4V, ALLaVA,
LVIS-Instruct4V, MiniGPT-4's first stage; VIGC-style correction for ``rewrite``): the request's
user turn carries the image and the text. A region focus can be drawn on a copy of the image
(``mark: draw``, ViP-LLaVA style), which both the generator and the exported sample show, or
written as coordinates into the sample's first question (``mark: text``).

Per item the LLM call is wrapped by two pure functions, ``format_request`` and
``parse_response``; the raw text always stays in ``meta["raw"]``, and a response that does not
parse is kept with ``meta["parse_error"]`` (and no turns) so that a filter can drop it visibly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    finish: str  # the provider's finish reason of ``text`` ("length": cut at max_tokens)


@register("task", "generate")
class GenerateTask(ModelOp, Task):
    """Generate conversations with an LLM from a text rendering of each image's annotations,
    or, with ``image: true``, with a vision model that sees the image (and the annotation text,
    when the context template renders any: LVIS-Instruct4V gives both; a plain image folder gives
    the image alone). ``task`` instead of ``source`` generates from other tasks' samples, their
    answers becoming the captions of the context (ShareGPT4V: vision captions, then text-only
    conversations from them). With the ``region`` context the marked box is drawn on a copy of
    the image (``mark: draw``) or written into the first question (``mark: text``), so that
    questions about "the box" are answerable.

    Reads: captions, objects, qas, ocr, regions. Writes: turns, meta.context, meta.generator,
    meta.requests, meta.raw, meta.finish_reasons (the provider's, of the text the turns come
    from: ``length`` when cut at ``max_tokens``), meta.parse_error, meta.annotations.
    """

    version = 2
    reads = ("captions|objects|qas|ocr|regions|image",)
    writes = (
        "turns",
        "meta.context",
        "meta.generator",
        "meta.requests",
        "meta.raw",
        "meta.finish_reasons",
        "meta.parse_error",
        "meta.annotations",
    )
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "source": {"type": "string"},
            "task": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "generate from these tasks' samples instead of a source (their "
                               "answers are the captions, their annotations the objects)",
            },
            "generator": {"type": "string"},
            "prompt": {"type": "string", "description": "prompt pack, e.g. llava/conversation"},
            "image": {
                "type": "boolean",
                "default": False,
                "description": "the generator sees the image (a generator with vision: true)",
            },
            "mark": {
                "enum": ["draw", "text"],
                "default": "draw",
                "description": "region context: draw the box on a copy of the image (what the "
                               "sample shows) or put its coordinates in the first question",
            },
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
        "required": ["generator", "prompt"],
        "oneOf": [{"required": ["source"]}, {"required": ["task"]}],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        refs = super().references()
        refs["generator"] = [self.params["generator"]]
        if self.params.get("pool"):
            refs["pool"] = [self.params["pool"]]
        if self.params.get("task"):
            refs["task"] = list(self.params["task"])
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

    def shardable(self) -> bool:
        """From a source, each record's samples depend on that record alone (a record
        ``limit`` counts across the whole source, so it keeps the step in one piece)."""
        return bool(self.params.get("source")) and not self.params.get("limit")

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
        """The context text, the drawn examples and the request for one record (None: nothing
        to show: no text, and no image or ``image: false``)."""
        from vlitc.llm import Request
        from vlitc.llm.context import render
        from vlitc.llm.parse import response_format

        focus = self._focus(record, ctx)
        context = render(record, self.params["context"], ctx.recipe_dir, focus)
        see = self.params["image"] and record.get("image") is not None
        if not context and not see:
            return None
        image = record.get("image")
        if focus is not None and image and self.params["mark"] == "draw":
            image = derived_image(image, [focus["bbox"]], ctx)
        rng = self._rng(ctx, record["id"])
        user = "\n\n".join(t for t in (pack.user, context) if t) or "Describe the image."
        messages, chosen = pack.messages(user, self.params["examples"], rng)
        if see and image is not None:
            messages[-1] = {"role": "user", "content": with_image(image, user, ctx)}
        p = self.params
        req = Request(
            messages=messages,
            n=p["n"],
            temperature=p.get("temperature"),
            top_p=p.get("top_p"),
            max_tokens=p.get("max_tokens"),
            cache_prefix=stable_prefix(chosen),
            response_format=response_format(p["parse"]),
        )
        info = {"context": context, "examples": chosen, "focus": focus, "image": image}
        return info, req

    def parse_response(
        self, text: str, record: Record, ctx: OpContext, index: int, instructions: list[str],
        shown: Sequence[str] = (),
    ):
        """The turns of one answer; an answer that is one of the in-context example responses
        the request ``shown`` (copied instead of written about this image) does not parse."""
        from vlitc.llm.parse import Parsed, parse

        instruction = None
        if instructions:
            instruction = self._rng(ctx, f"{record['id']}:{index}:instruction").choice(instructions)
        parsed = parse(text, self.params["parse"], instruction)
        words = " ".join(text.split())
        for k, example in enumerate(shown, 1):
            if parsed.turns is not None and words == " ".join(example.split()):
                return Parsed(None, f"the reply copies in-context example {k} instead of "
                                    "writing about this image")
        return parsed

    # the run ------------------------------------------------------------------------------
    def _instructions(self, ctx: OpContext) -> list[str]:
        if self.params.get("pool"):
            return [r["template"] for r in ctx.input(f"pool:{self.params['pool']}")]
        return list(self.params.get("instructions") or [])

    def _from_tasks(self, ctx: OpContext) -> Iterator[Record]:
        """One record per sample of the ``task`` tasks: its answers as captions, its annotated
        objects and text, its image."""
        from vlitc.records import assistant_text

        for name in self.params["task"]:
            for s in ctx.input(f"task:{name}"):
                text = assistant_text(s).strip()
                if not text:
                    continue
                ann = (s.get("meta") or {}).get("annotations") or {}
                rec: Record = {"id": s["id"], "source": s.get("source", ""),
                               "image": s.get("image"), "captions": [text], "meta": {}}
                if ann.get("objects"):
                    rec["objects"] = [{"category": o["category"], "bbox": o["bbox"]}
                                      for o in ann["objects"]]
                if ann.get("ocr"):
                    rec["ocr"] = [{"text": t} for t in ann["ocr"]]
                yield rec

    def _made(self, records: Iterable[Record], ctx: OpContext) -> Iterator[_Made]:
        """Each record's request, as the run sends them (in order; the ``limit`` applied)."""
        from vlitc.llm.prompts import load_pack

        if self.params.get("task"):
            records = self._from_tasks(ctx)
        pack = load_pack(self.params["prompt"], ctx.recipe_dir)
        if self.params.get("limit"):
            records = islice(records, self.params["limit"] + ctx.extra_items)
        for rec in records:
            got = self.format_request(rec, ctx, pack)
            if got is None:
                ctx.count("no_context")
                continue
            yield _Made(rec, *got)

    def planned_requests(self, records: Iterable[Record], ctx: OpContext) -> Iterator[tuple[str, Any]]:
        return ((str(m.record["id"]), m.request) for m in self._made(records, ctx))

    def item_of(self, out: dict) -> str:
        return str((out.get("meta") or {}).get("record_id"))

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        from vlitc.llm.prompts import load_pack

        instructions = self._instructions(ctx)
        if self.params["parse"] == "answer" and not instructions:
            raise GenerationError(f"task {self.label}: parse: answer needs instructions or a pool")
        answers = self.answers(ctx, self._made(records, ctx), lambda m: m.request,
                               lambda m: str(m.record["id"]), count_usage=True)
        pack = load_pack(self.params["prompt"], ctx.recipe_dir)

        def shown(m: _Made) -> list[str]:
            return [pack.examples[k][1] for k in m.info["examples"]]

        rows: Iterator[_Answer] = (
            _Answer(m, i, text, self.parse_response(text, m.record, ctx, i, instructions,
                                                    shown(m)), [key], reason)
            for m, resp in answers if not resp.error
            for i, (text, key, reason) in enumerate(zip(resp.texts, resp.keys,
                                                        resp.finish_reasons, strict=False))
        )
        if self.params["repair"]:
            rows = self._repaired(rows, ctx, instructions, shown)
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
        return Request(messages=msgs, temperature=0.0, max_tokens=req.max_tokens,
                       cache_prefix=req.cache_prefix, response_format=req.response_format)

    def _repaired(self, rows: Iterable[_Answer], ctx: OpContext, instructions,
                  shown: Callable[[_Made], list[str]]) -> Iterator[_Answer]:
        """Unparsed answers asked once to be repaired; the repaired text replaces the raw. A
        repair that does not parse either (a copied format hint or example among the reasons)
        leaves the first answer, with the repair's text and reason in ``meta.repair``."""
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
            again = self.parse_response(resp.texts[0], row.made.record, ctx, row.nth,
                                        instructions, shown(row.made))
            if again.turns is None:
                tried = {"raw": resp.texts[0], "error": again.error, "failed": True}
                yield row._replace(made=row.made._replace(info={**row.made.info,
                                                                "repair": tried}))
                continue
            ctx.count("repaired")
            info = {**row.made.info, "repair": {"raw": row.text, "error": row.parsed.error}}
            yield _Answer(row.made._replace(info=info), row.nth, resp.texts[0], again,
                          [*row.keys, resp.request_id], resp.finish_reasons[0])

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
            # why the text the turns come from ended, as the provider said ("length": cut at
            # max_tokens), one per response: what the truncated filter reads
            "finish_reasons": [row.finish],
            "sample_index": i,
        }
        if info.get("focus") is not None:
            meta["focus"] = info["focus"]
        if info.get("repair"):
            meta["repair"] = info["repair"]
        turns = parsed.turns or []
        focus = info.get("focus")
        if turns and focus is not None and self.params["mark"] == "text":
            turns = [{**turns[0], "content": f"{focus_phrase(focus, rec)}\n{turns[0]['content']}"},
                     *turns[1:]]
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
            image=info.get("image", rec.get("image")),
            meta=meta,
        )


def stable_prefix(examples: list[int]) -> int:
    """Leading messages shared by the requests that drew the same ``examples``: the system
    prompt and each example's context and response (where a prompt cache may break)."""
    return 1 + 2 * len(examples)


def derived_image(image: dict, boxes: list[list[float]], ctx: OpContext) -> dict:
    """A sample image: ``image`` with ``boxes`` drawn on a copy (numbered when several), stored
    under the run's derived-image root and written into the release by the exporters."""
    from vlitc.llm.vision import DERIVED_ROOT, derive, source_of

    folder = ctx.image_roots.get(DERIVED_ROOT)
    if folder is None:
        raise GenerationError("drawing a region box needs the run's derived-image folder")
    got = derive(source_of(image, ctx.image_path(image)), boxes, len(boxes) > 1, folder)
    return {"root": DERIVED_ROOT, "path": got["path"], "width": got["width"],
            "height": got["height"], "sha256": got["sha256"],
            "derived_from": {k: image.get(k) for k in ("root", "path", "sha256")},
            "boxes": [list(b) for b in boxes]}


def with_image(image: dict, text: str, ctx: OpContext) -> list[dict]:
    """Message content showing ``image`` (bytes attached when sent) followed by ``text``."""
    from vlitc.llm.vision import image_part, source_of, text_part

    return [image_part(source_of(image, ctx.image_path(image))), text_part(text)]


def focus_phrase(focus: dict, rec: Record) -> str:
    """The region a question is about, in words, for samples whose image has no box drawn."""
    from vlitc.llm.context import box_text

    img = rec.get("image") or {}
    try:
        where = box_text(focus["bbox"], img.get("width"), img.get("height"))
        unit = "x1, y1, x2, y2 as fractions of the image size"
    except ValueError:
        where = "[" + ", ".join(str(round(float(v), 1)) for v in focus["bbox"]) + "]"
        unit = "x1, y1, x2, y2 in pixels"
    return f"Consider the region {where} ({unit})."


@register("task", "rewrite")
class RewriteTask(ModelOp, Task):
    """Have an LLM fix and tighten another task's samples, keeping both versions in metadata.
    With ``image: true`` a vision model checks each answer against the sample's image and
    corrects what the image contradicts (VIGC); ``prompt`` takes the system prompt and
    in-context examples from a pack (e.g. ``vigc/correct``) instead of ``instructions``.

    Reads: turns. Writes: turns, meta.rewrite (original turns, raw text, requests, generator),
    meta.finish_reasons (the rewrite's, when its answers replace the original ones).
    """

    version = 2
    reads = ("turns",)
    writes = ("turns", "meta.rewrite", "meta.finish_reasons")
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
            "prompt": {"type": "string",
                       "description": "prompt pack (system prompt + examples), e.g. vigc/correct; "
                                      "replaces instructions"},
            "examples": {"type": "integer", "minimum": 0, "default": 2,
                         "description": "in-context examples drawn per request from prompt"},
            "image": {"type": "boolean", "default": False,
                      "description": "the generator sees the sample's image (vision: true)"},
            **_SAMPLING,
            "temperature": _SAMPLING["temperature"] | {"default": 0.0},
        },
        "required": ["task", "generator"],
        "additionalProperties": False,
    }

    def references(self) -> dict[str, list[str]]:
        return {"task": list(self.params["task"]), "generator": [self.params["generator"]]}

    def files(self, ctx: OpContext) -> list[Path]:
        from vlitc.llm.prompts import pack_files

        return pack_files(self.params["prompt"], ctx.recipe_dir) if self.params.get("prompt") else []

    def format_request(self, s: Sample, ctx: OpContext | None = None):
        """The text to rewrite: a single answer as is, a conversation as Question/Answer blocks;
        with ``image: true`` the sample's image goes first."""
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
        chosen: list[int] = []
        if self.params.get("prompt"):
            from vlitc.llm.prompts import load_pack

            pack = load_pack(self.params["prompt"], ctx.recipe_dir if ctx else None)
            rng = random.Random(f"{ctx.seed if ctx else 0}:{self.label}:{s['id']}")
            msgs, chosen = pack.messages(body, self.params["examples"], rng)
        if self.params["image"] and s.get("image") and ctx is not None:
            msgs[-1] = {"role": "user", "content": with_image(s["image"], body, ctx)}
        return Request(
            messages=msgs,
            temperature=self.params["temperature"],
            top_p=self.params.get("top_p"),
            max_tokens=self.params.get("max_tokens"),
            cache_prefix=stable_prefix(chosen),
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

    def inputs(self) -> list[str]:
        return [f"task:{name}" for name in self.params["task"]]

    def shardable(self) -> bool:
        return True  # each sample's rewrite depends on that sample alone

    def _samples(self, ctx: OpContext) -> Iterator[Sample]:
        for ref in self.inputs():
            yield from ctx.input(ref)

    def _todo(self, samples: Iterable[Sample], ctx: OpContext) -> Iterator[Sample]:
        for s in samples:
            if s.get("turns"):
                yield s
            else:
                ctx.count("skipped_unparsed")

    def planned_requests(self, records: Iterable[Record], ctx: OpContext) -> Iterator[tuple[str, Any]]:
        return ((str(s["id"]), self.format_request(s, ctx)) for s in self._todo(self._samples(ctx), ctx))

    def item_of(self, out: dict) -> str:
        return str(((out.get("meta") or {}).get("rewrite") or {}).get("from_id"))

    def run(self, records: Iterable[Record], ctx: OpContext) -> Iterator[Sample]:
        """Rewrite the samples of its tasks (``records``: what :meth:`inputs` names)."""
        for s, resp in self.answers(ctx, self._todo(records, ctx), lambda s: self.format_request(s, ctx),
                                    lambda s: str(s["id"]),
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
            meta["finish_reasons"] = list(resp.finish_reasons[:1])  # of the answers now shown
        out = sample(
            f"{self.label}/{s['id']}",
            self.label,
            turns,
            source=s.get("source", ""),
            image=s.get("image"),
            meta=meta,
        )
        return out
