"""A loopback server that speaks the OpenAI Chat Completions and Anthropic Messages APIs, for
tests, benchmarks and dry runs of recipes without a model.

Answers are deterministic functions of the request body (LLaVA ``Question:``/``Answer:`` blocks
naming a digest of the last user message). A request that carries images (OpenAI ``image_url``
data URIs, Anthropic base64 ``image`` blocks) is answered from the pixels it received: the
server decodes each image and names the colours of the demo scenes' shapes it sees (the dominant
one first), whether a marked box is drawn, and the image's size and sha256, so a test can tell
which image a sample's answer came from; usage counts image tokens by each provider's rule, and
the log records every image received (``images``: sha256, size, media type, detail). A system
prompt asking for "plain prose" gets the answer sentence alone; one asking for "the corrected
text" (a rewrite) gets the text back with its parenthesised asides removed. A judge (a
system prompt with "VERDICT:") shown images answers ``VERDICT: correct`` exactly when the
conversation names the dominant colour it sees. Answers stop at the request's ``max_tokens``
(four characters a token), with finish reason ``length`` (Anthropic's ``max_tokens``); with
``answer_chars`` a generated answer is that long, or with ``"examples"`` as long as the
in-context example answers the request shows (a model imitating them). It can
add a fixed latency, inject faults (HTTP 429
with ``Retry-After``, HTTP 500, a hang past the client's timeout, a malformed 200 body) for a
share of requests chosen by a seeded hash of (body, attempt), and hold every request after the
first ``hold_after`` successes (to kill a client mid-build). Every request is logged with the
sha256 of its body and its outcome. Plain asyncio streams, HTTP/1.1 with keep-alive.

Prompt caching is emulated as each provider bills it: an OpenAI prompt whose leading messages
repeat a prefix seen before (of ``cache_min_tokens`` or more, counted in steps of
``cache_step``) reports them as ``usage.prompt_tokens_details.cached_tokens``; an Anthropic
request reports, for its ``cache_control`` breakpoints (system blocks, then message blocks, each
prefix of ``cache_min_tokens`` or more), the longest prefix seen before as
``cache_read_input_tokens`` and the rest up to its last breakpoint as
``cache_creation_input_tokens``, with ``input_tokens`` the remainder. The cache lives as long as
the server (no expiry).

It also runs batches, as both providers' batch APIs do: OpenAI's files upload (multipart,
purpose ``batch``) and content, ``POST /v1/batches`` and its retrieve, and Anthropic's
``POST /v1/messages/batches``, retrieve and ``results``. A batch's requests are answered as the
same requests sent one by one would be (each logged as a ``batch`` answer), a share
``batch_step`` of them at each status check (all at the first by default), none while
``batch_hold`` is set; ``batch_fail_rate`` fails a seeded share of them (HTTP 500, a retryable
error), and ``batch_expire_after`` lets a batch expire once it answered that many (the rest
come back ``expired``). ``batches_created`` counts the batches created.

Structured output is honoured as the APIs define it: an OpenAI ``response_format`` of type
``json_schema`` (which must name the schema) or ``json_object`` (whose messages must say "JSON",
with an optional llama-cpp-python ``schema``), an Anthropic forced tool (answered with a
``tool_use`` block whose input follows its ``input_schema``), ``output_config.format`` or a
prefilled assistant turn (the reply continues it). The JSON reply follows the schema's shape:
``{"dialog": [{"User": ..., "AI": ...}]}`` when the schema has ``dialog``, else one ``{"User":
..., "AI": ...}`` object. A request the real API would refuse gets HTTP 400.

    python -m vlitc.llm.fakeserver --port 8000 --latency 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field

FAULTS = ("429", "500", "timeout", "malformed")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
#: the demo scenes' palette (scripts/make_demo_data.py) and the region-mark colour
PALETTE = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30)}
MARK = (255, 0, 255)
#: what pads an answer to the length a server is told to write
FILLER = "The rest of the scene matches what the description says. "


def decode_images(body: dict) -> list[dict]:
    """Every image in a request body (either API), decoded: ``{"sha256", "width", "height",
    "media_type", "detail", "colours", "dominant", "marked"}``; an image that does not decode
    gets ``"error"``."""
    import base64

    out = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            media, data, detail = None, None, None
            if part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                detail = (part.get("image_url") or {}).get("detail")
                if url.startswith("data:") and ";base64," in url:
                    media, data = url[5:].split(";base64,", 1)
                else:
                    out.append({"url": url, "detail": detail, "error": "not a data URI"})
                    continue
            elif part.get("type") == "image":
                src = part.get("source") or {}
                media, data = src.get("media_type"), src.get("data")
            else:
                continue
            try:
                raw = base64.b64decode(str(data), validate=True)
                out.append({"media_type": media, "detail": detail, **_looked(raw)})
            except Exception as exc:  # a bad image is reported, not fatal
                out.append({"media_type": media, "detail": detail, "error": str(exc)})
    return out


_LOOKED: dict[str, dict] = {}  # what an image showed, by the sha256 of its bytes


def _looked(raw: bytes) -> dict:
    """:func:`_look`, remembered by content (the same image sent again is not decoded again)."""
    key = hashlib.sha256(raw).hexdigest()
    if key not in _LOOKED:
        if len(_LOOKED) > 50_000:
            _LOOKED.clear()
        _LOOKED[key] = _look(raw)
    return _LOOKED[key]


def _look(raw: bytes) -> dict:
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        fmt = (im.format or "").lower()
        rgb = im.convert("RGB")
    w, h = rgb.size
    small = rgb if w * h <= 40_000 else rgb.resize((200, max(1, 200 * h // w)))
    px = np.asarray(small, dtype=np.int32).reshape(-1, 3)
    near = {name: ((px - np.array(ref)) ** 2).sum(axis=1) < 3600
            for name, ref in {**PALETTE, "mark": MARK}.items()}
    total = len(px)
    counts = {c: int(near[c].sum()) for c in PALETTE}
    marked = int(near["mark"].sum())
    seen = sorted((c for c in counts if counts[c] > total * 0.005), key=lambda c: -counts[c])
    return {"sha256": hashlib.sha256(raw).hexdigest(), "width": w, "height": h, "format": fmt,
            "colours": seen, "dominant": seen[0] if seen else None,
            "marked": marked > total * 0.002}


def _vision_answer(images: list[dict]) -> str:
    parts = []
    for i, im in enumerate(images):
        if im.get("error"):
            parts.append(f"image {i + 1} could not be read ({im['error']})")
            continue
        colours = ", ".join(im["colours"]) or "no"
        box = " with a marked box" if im["marked"] else ""
        parts.append(f"image {i + 1} shows {colours} shapes{box}; the dominant colour is "
                     f"{im['dominant'] or 'none'} ({im['width']}x{im['height']}, "
                     f"sha256 {im['sha256'][:12]})")
    return "I see " + "; ".join(parts) + "."


def _cap(text: str, body: dict, cut: str = "length") -> tuple[str, str]:
    """An answer cut at the request's max_tokens (four characters a token), as a model stops,
    and its finish reason: ``cut`` (OpenAI's ``length``, Anthropic's ``max_tokens``) when it was
    cut short, else the provider's normal stop."""
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    if cap and len(text) > int(cap) * 4:
        return text[: int(cap) * 4], cut
    return text, "stop" if cut == "length" else "end_turn"


def _text_len(content) -> int:
    if isinstance(content, list):
        return sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return len(str(content or ""))


def _image_tokens(images: list[dict], anthropic: bool, model: str) -> int:
    from vlitc.llm.vision import anthropic_tokens, openai_tokens

    return sum(
        anthropic_tokens(im["width"], im["height"]) if anthropic
        else openai_tokens(im["width"], im["height"], im.get("detail"), model)
        for im in images if not im.get("error")
    )


class BadRequest(Exception):
    """A request the real API refuses (HTTP 400, its message as the API words it)."""


@dataclass
class FakeServer:
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    hang: float = 5.0  # seconds a "timeout" fault waits before dropping the connection
    hold_after: int | None = None
    seed: int = 0
    log_path: str | None = None
    keep_bodies: bool = False  # log each answered request's body and answer (tests of parameters)
    #: a share of requests answered after ``slow_latency`` instead of ``latency``, chosen by a
    #: hash of the last user message (so the same requests are slow whichever client sends them)
    slow_rate: float = 0.0
    slow_latency: float = 5.0
    #: answer at most this many choices per call, as llama.cpp does (it ignores ``n``); a text
    #: then depends on the request's ``seed`` as a sampling server's would
    max_choices: int | None = None
    #: generated answers this many characters long, or ``"examples"``: as long as the mean of
    #: the in-context example answers the request shows (default: one line)
    answer_chars: int | str | None = None
    #: prompt caching (see the module doc): the smallest cacheable prefix, OpenAI's increment
    cache_min_tokens: int = 1024
    cache_step: int = 128
    #: batches: hold every batch in progress; requests answered per status check (None: all);
    #: share of batch requests that fail (HTTP 500); answers after which a batch expires
    batch_hold: bool = False
    batch_step: int | None = None
    batch_fail_rate: float = 0.0
    batch_expire_after: int | None = None
    batches_created: int = 0
    batches: dict[str, dict] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    port: int = 0
    _prefixes: set[str] = field(default_factory=set)
    _seen: dict[str, int] = field(default_factory=dict)
    _ok: int = 0

    # answers ---------------------------------------------------------------------------------
    @staticmethod
    def reply(body: dict, index: int, images: list[dict] | None = None,
              length: int | None = None) -> str:
        """The answer to ``body``: with ``length``, a generated one is padded to that many
        characters (its answer sentence goes on), as a model writing that much."""
        msgs = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), "")
        if isinstance(last, list):
            last = " ".join(b.get("text", "") for b in last if isinstance(b, dict))
        tag = hashlib.sha256(str(last).encode()).hexdigest()[:8]
        first = str(last).strip().splitlines()[0][:60] if str(last).strip() else "nothing"
        system = " ".join(str(m.get("content", "")) for m in msgs if m.get("role") == "system")
        system += str(body.get("system", ""))
        if "VERDICT:" in system:  # a judge: with images, correct iff the seen colour is named
            seen = [str(im["dominant"]) for im in images or [] if im.get("dominant")]
            ok = all(c in str(last).lower() for c in seen)
            why = f"The image's dominant colour is {', '.join(seen)}." if seen else "Looks fine."
            return f"{why}\nVERDICT: {'correct' if ok else 'incorrect'}"
        if "corrected text" in system:  # a rewrite: the text back, asides removed
            fixed = re.sub(r"\s*\([^()]*\)", "", str(last)).strip()
            return re.sub(r"[ \t]+", " ", fixed)
        if images:
            answer = f"{_vision_answer(images)} (ref {tag}, sample {index})"
        else:
            answer = f"It shows {first} (ref {tag}, sample {index})."

        def shaped(answer: str) -> str:
            if "plain prose" in system:  # a caption or a detailed description
                return answer
            if '"User"' in system:  # the review paper's JSON dialog
                return json.dumps({"User": "What does the image show?", "AI": answer})
            return (
                f"Question:\nWhat does the image show?\n===\nAnswer:\n{answer}\n===\n"
                "Question:\nIs it clear?\n===\nAnswer:\nYes, it is clear."
            )

        text = shaped(answer)
        if length and len(text) < length:  # ASCII filler: JSON keeps its length
            more = length - len(text) - 1
            text = shaped(answer + " " + (FILLER * (more // len(FILLER) + 1))[:more])
        return text

    def _length(self, body: dict) -> int | None:
        """How long a generated answer is: ``answer_chars``, or with ``"examples"`` the mean
        length of the assistant turns the request shows (a model imitating its in-context
        examples; none shown: the plain answer)."""
        if self.answer_chars != "examples":
            return int(self.answer_chars) if self.answer_chars else None
        shown = [_text_len(m.get("content")) for m in body.get("messages") or []
                 if m.get("role") == "assistant"]
        return int(sum(shown) / len(shown)) if shown else None

    def _json_reply(self, body: dict, index: int, images: list[dict], schema) -> dict:
        """The reply as a JSON value of ``schema``'s shape."""
        text = self.reply(body, index, images, self._length(body))
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            obj = {"User": "What does the image show?", "AI": text}
        props = (schema or {}).get("properties") or {}
        return {"dialog": [obj]} if "dialog" in props else obj

    def _openai_text(self, body: dict, index: int, images: list[dict]) -> str:
        fmt = body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
            return self.reply(body, index, images, self._length(body))
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema") or {}
            if not spec.get("name") or not isinstance(spec.get("schema"), dict):
                raise BadRequest("response_format json_schema needs json_schema.name and .schema")
            schema = spec["schema"]
        elif fmt["type"] == "json_object":
            said = json.dumps(body.get("messages") or []).lower()
            if "json" not in said:
                raise BadRequest("'messages' must contain the word 'json' in some form, to use "
                                 "'response_format' of type 'json_object'.")
            schema = fmt.get("schema")
        else:
            raise BadRequest(f"invalid response_format type {fmt['type']!r}")
        return json.dumps(self._json_reply(body, index, images, schema))

    def _openai(self, body: dict, images: list[dict]) -> dict:
        n = int(body.get("n") or 1)
        if self.max_choices is None:
            answers = [_cap(self._openai_text(body, i, images), body) for i in range(n)]
        else:
            shift = int(body.get("seed") or 0)
            answers = [_cap(self._openai_text(body, shift + i, images), body)
                       for i in range(min(n, self.max_choices))]
        texts = [t for t, _ in answers]
        prompt = sum(_text_len(m.get("content")) for m in body.get("messages", [])) // 4 + 1
        prompt += _image_tokens(images, False, str(body.get("model", "")))
        cached = self._openai_cached(body)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": i,
                    "finish_reason": reason,
                    "message": {"role": "assistant", "content": t},
                }
                for i, (t, reason) in enumerate(answers)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": sum(len(t) // 4 for t in texts),
                "total_tokens": prompt + sum(len(t) // 4 for t in texts),
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    def _anthropic_content(self, body: dict, images: list[dict]) -> tuple[list[dict], str]:
        """The reply's content blocks and stop reason: text, a forced tool's call, structured
        output, or the continuation of a prefilled reply."""
        choice, tools = body.get("tool_choice") or {}, body.get("tools") or []
        if choice.get("type") == "tool":
            tool = next((t for t in tools if t.get("name") == choice.get("name")), None)
            if tool is None:
                raise BadRequest(f"tool_choice names {choice.get('name')!r}, not in tools")
            call = self._json_reply(body, 0, images, tool.get("input_schema"))
            return [{"type": "tool_use", "id": "toolu_fake", "name": tool["name"],
                     "input": call}], "tool_use"
        fmt = (body.get("output_config") or {}).get("format")
        msgs = body.get("messages") or []
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            text = json.dumps(self._json_reply(body, 0, images, fmt.get("schema")))
        elif msgs and msgs[-1].get("role") == "assistant":  # a prefilled reply, continued
            start = str(msgs[-1].get("content") or "")
            full = self.reply(body, 0, images, self._length(body))
            text = full[len(start):] if full.startswith(start) else full
        else:
            text = self.reply(body, 0, images, self._length(body))
        text, reason = _cap(text, body, "max_tokens")
        return [{"type": "text", "text": text}], reason

    def _anthropic(self, body: dict, images: list[dict]) -> dict:
        content, reason = self._anthropic_content(body, images)
        text = "".join(b.get("text", "") or json.dumps(b.get("input")) for b in content)
        prompt = sum(_text_len(m.get("content")) for m in body.get("messages", [])) // 4 + 1
        prompt += _text_len(body.get("system")) // 4 + _image_tokens(images, True, "")
        read, write = self._anthropic_cached(body)
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": content,
            "stop_reason": reason,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt - read - write, "output_tokens": len(text) // 4,
                      "cache_read_input_tokens": read, "cache_creation_input_tokens": write},
        }

    # prompt caching ----------------------------------------------------------------------
    def _prefixes_of(self, blocks: list, api: str) -> list[tuple[int, bool, str]]:
        """(tokens, seen before, digest) of each prefix ``blocks[:i + 1]`` (cache markers left
        out of the digest: they change the billing, not the prompt)."""
        out, chars, h = [], 0, hashlib.sha256(api.encode())
        for b in blocks:
            clean = {k: v for k, v in b.items() if k != "cache_control"}
            h.update(json.dumps(clean, sort_keys=True).encode())
            chars += _text_len(clean["content"]) if "content" in clean \
                else len(str(clean.get("text", "")))
            digest = h.copy().hexdigest()
            out.append((chars // 4, digest in self._prefixes, digest))
        return out

    def _openai_cached(self, body: dict) -> int:
        msgs = [{"role": m.get("role"), "content": m.get("content")}
                for m in body.get("messages") or []]
        prefixes = self._prefixes_of(msgs, f"openai:{body.get('model')}")
        hit = max((t for t, seen, _ in prefixes if seen and t >= self.cache_min_tokens),
                  default=0)
        self._prefixes.update(d for t, _, d in prefixes if t >= self.cache_min_tokens)
        if not hit:
            return 0
        return self.cache_min_tokens + (hit - self.cache_min_tokens) // self.cache_step * self.cache_step

    def _anthropic_cached(self, body: dict) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) at the request's breakpoints."""
        system = body.get("system") or []
        blocks: list = [{"tools": body["tools"]}] if body.get("tools") else []
        blocks += [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        for m in body.get("messages") or []:
            content = m.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            blocks += [{"role": m.get("role"), **p} for p in parts or [] if isinstance(p, dict)]
        prefixes = self._prefixes_of(blocks, f"anthropic:{body.get('model')}")
        marks = [i for i, b in enumerate(blocks)
                 if isinstance(b, dict) and b.get("cache_control")
                 and prefixes[i][0] >= self.cache_min_tokens]
        if not marks:
            return 0, 0
        read = max((prefixes[i][0] for i in marks if prefixes[i][1]), default=0)
        write = prefixes[marks[-1]][0] - read
        self._prefixes.update(prefixes[i][2] for i in marks)
        return read, write

    # faults ----------------------------------------------------------------------------------
    def _fault(self, digest: str) -> str | None:
        attempt = self._seen.get(digest, 0)
        self._seen[digest] = attempt + 1
        if self.fault_rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:{digest}:{attempt}")
        if rng.random() >= self.fault_rate:
            return None
        return rng.choice(self.faults)

    def _record(self, path: str, digest: str, outcome: str, extra: dict | None = None) -> None:
        row = {"path": path, "body_sha256": digest, "outcome": outcome, "t": time.time(),
               **(extra or {})}
        self.log.append(row)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()

    def completed(self) -> list[str]:
        """Body digests of the requests that were answered successfully, in order."""
        return [r["body_sha256"] for r in self.log if r["outcome"] == "ok"]

    # HTTP ------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                }
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    raw = await _chunked(reader)
                else:
                    raw = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._respond(method, path, raw, writer, headers):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, raw: bytes, writer,
                       headers: dict | None = None) -> bool:
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/v1/models":
            await _send(
                writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]}
            )
            return True
        if path.startswith(("/v1/files", "/v1/batches", "/v1/messages/batches")):
            status, obj, blob = self._batch_api(method, path, raw, headers or {})
            self._record(path, hashlib.sha256(raw).hexdigest(), "api", {"method": method})
            await _send(writer, status, obj, raw_body=blob)
            return True
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            await _send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        digest = hashlib.sha256(raw).hexdigest()
        if self.hold_after is not None and self._ok >= self.hold_after:
            self._record(path, digest, "held")
            await asyncio.sleep(3600)
            return False
        fault = self._fault(digest)
        if self.slow_rate and self._slow(raw):
            await asyncio.sleep(self.slow_latency)
        elif self.latency:
            await asyncio.sleep(self.latency)
        if fault == "timeout":
            self._record(path, digest, "timeout")
            await asyncio.sleep(self.hang)
            return False
        if fault == "malformed":
            self._record(path, digest, "malformed")
            await _send(writer, 200, None, raw_body=b'{"choices": [{"message": ')
            return True
        if fault in ("429", "500"):
            self._record(path, digest, fault)
            err = {
                "type": "error",
                "error": {
                    "type": "rate_limit_error" if fault == "429" else "api_error",
                    "message": f"injected {fault}",
                },
            }
            await _send(
                writer, int(fault), err, extra={"retry-after": "0"} if fault == "429" else None
            )
            return True
        body = json.loads(raw)
        images = decode_images(body)
        try:
            answer = (self._anthropic if path.endswith("/messages") else self._openai)(body, images)
        except BadRequest as exc:
            self._record(path, digest, "400", {"body": body} if self.keep_bodies else None)
            await _send(writer, 400, _error(str(exc), "invalid_request_error"))
            return True
        self._ok += 1
        extra = {"body": body, "answer": answer} if self.keep_bodies else {}
        if images:
            extra["images"] = images
        self._record(path, digest, "ok", extra)  # logged before the client can see the answer
        await _send(writer, 200, answer)
        return True

    def _slow(self, raw: bytes) -> bool:
        try:
            msgs = json.loads(raw).get("messages") or []
        except (ValueError, AttributeError):
            return False
        last = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "")
        tag = hashlib.sha256(json.dumps(last, sort_keys=True).encode()).digest()
        return int.from_bytes(tag[:4], "big") < self.slow_rate * 2**32

    # batches ---------------------------------------------------------------------------------
    def _batch_api(self, method: str, path: str, raw: bytes, headers: dict
                   ) -> tuple[int, dict | None, bytes | None]:
        """(status, JSON body, or raw bytes) of a files or batches request."""
        parts = path.strip("/").split("/")[1:]  # without "v1"
        if method == "POST" and parts == ["files"]:
            return 200, self._upload(raw, headers.get("content-type", "")), None
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            if parts[1] not in self.files:
                return 404, {"error": {"message": f"no file {parts[1]}"}}, None
            return 200, None, self.files[parts[1]]
        if method == "POST" and parts == ["batches"]:
            return self._create_openai(json.loads(raw))
        if method == "POST" and parts == ["messages", "batches"]:
            return self._create_anthropic(json.loads(raw))
        if method == "GET" and parts[:-1] in (["batches"], ["messages", "batches"]):
            batch = self.batches.get(parts[-1])
            if batch is None or (batch["api"] == "anthropic") != (parts[0] == "messages"):
                return 404, _error(f"no batch {parts[-1]}", "not_found_error"), None
            self._advance(batch)
            return 200, self._batch_object(batch), None
        if (method == "GET" and len(parts) == 4 and parts[:2] == ["messages", "batches"]
                and parts[3] == "results"):
            batch = self.batches.get(parts[2])
            if batch is None or not batch["ended"]:
                return 404, _error("no results (yet)", "not_found_error"), None
            lines = [json.dumps(batch["results"][r["custom_id"]]) for r in batch["requests"]
                     if r["custom_id"] in batch["results"]]
            return 200, None, ("\n".join(lines) + "\n").encode()
        return 404, {"error": {"message": f"no route {method} {path}"}}, None

    def _upload(self, raw: bytes, content_type: str) -> dict:
        from email.parser import BytesParser
        from email.policy import HTTP

        msg = BytesParser(policy=HTTP).parsebytes(
            f"content-type: {content_type}\r\n\r\n".encode() + raw)
        data, name, purpose = b"", "upload", ""
        for part in msg.iter_parts():
            field_name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            if field_name == "file":
                data, name = payload, part.get_filename() or name
            elif field_name == "purpose":
                purpose = payload.decode()
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return _file_object(fid, name, purpose, len(data))

    def _new_batch(self, api: str, requests: list[dict], extra: dict) -> dict:
        self.batches_created += 1
        prefix = "msgbatch" if api == "anthropic" else "batch"
        batch = {"id": f"{prefix}_{self.batches_created}", "api": api, "requests": requests,
                 "results": {}, "failed": set(), "ended": False, "status": "in_progress",
                 "created": int(time.time()), **extra}
        self.batches[batch["id"]] = batch
        return batch

    def _create_openai(self, body: dict) -> tuple[int, dict | None, bytes | None]:
        fid = body.get("input_file_id")
        if fid not in self.files or body.get("endpoint") != "/v1/chat/completions":
            return 400, _error(f"bad input file {fid!r} or endpoint", "invalid_request_error"), None
        lines = [json.loads(ln) for ln in self.files[fid].splitlines() if ln.strip()]
        ids = [ln.get("custom_id") for ln in lines]
        if len(set(ids)) != len(ids) or any(ln.get("url") != body["endpoint"] for ln in lines):
            return 400, _error("duplicate custom_id or a line for another endpoint",
                               "invalid_request_error"), None
        reqs = [{"custom_id": ln["custom_id"], "body": ln["body"]} for ln in lines]
        batch = self._new_batch("openai", reqs, {"input_file_id": fid,
                                                 "metadata": body.get("metadata")})
        return 200, self._batch_object(batch), None

    def _create_anthropic(self, body: dict) -> tuple[int, dict | None, bytes | None]:
        reqs = body.get("requests") or []
        ids = [r.get("custom_id") for r in reqs]
        if not reqs or len(set(ids)) != len(ids) or not all(
                isinstance(i, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids):
            return 400, _error("requests need unique custom_ids of 1-64 [A-Za-z0-9_-]",
                               "invalid_request_error"), None
        reqs = [{"custom_id": r["custom_id"], "body": r["params"]} for r in reqs]
        return 200, self._batch_object(self._new_batch("anthropic", reqs, {})), None

    def _advance(self, batch: dict) -> None:
        """Answer the next requests of a batch (at a status check), and end it when all are."""
        if batch["ended"] or self.batch_hold:
            return
        todo = [r for r in batch["requests"] if r["custom_id"] not in batch["results"]]
        for r in todo[: self.batch_step or len(todo)]:
            answered = len(batch["results"])
            if self.batch_expire_after is not None and answered >= self.batch_expire_after:
                break
            batch["results"][r["custom_id"]] = self._batch_answer(batch, r)
        done = len(batch["results"]) == len(batch["requests"])
        expired = (self.batch_expire_after is not None
                   and len(batch["results"]) >= self.batch_expire_after and not done)
        if expired:
            for r in batch["requests"]:
                if r["custom_id"] not in batch["results"]:
                    batch["results"][r["custom_id"]] = self._expired(batch, r)
        if done or expired:
            batch["ended"], batch["status"] = True, "expired" if expired else "completed"
            if batch["api"] == "openai":
                self._write_outputs(batch)

    def _batch_answer(self, batch: dict, r: dict) -> dict:
        body, cid = r["body"], r["custom_id"]
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        attempt = self._seen.get(f"batch:{digest}", 0)
        self._seen[f"batch:{digest}"] = attempt + 1
        rng = random.Random(f"{self.seed}:{digest}:{attempt}")
        anthropic = batch["api"] == "anthropic"
        if self.batch_fail_rate and rng.random() < self.batch_fail_rate:
            batch["failed"].add(cid)
            self._record(f"batch:{batch['id']}", digest, "500")
            if anthropic:
                return {"custom_id": cid, "result": {"type": "errored", "error": _error(
                    "injected batch failure", "api_error")}}
            return {"id": f"batch_req_{cid[:12]}", "custom_id": cid, "error": None,
                    "response": {"status_code": 500, "request_id": "req_fake",
                                 "body": _error("injected batch failure", "server_error")}}
        images = decode_images(body)
        try:
            answer = self._anthropic(body, images) if anthropic else self._openai(body, images)
        except BadRequest as exc:  # refused as the same request sent alone would be
            self._record(f"batch:{batch['id']}", digest, "400")
            if anthropic:
                return {"custom_id": cid, "result": {"type": "errored", "error": _error(
                    str(exc), "invalid_request_error")}}
            return {"id": f"batch_req_{cid[:12]}", "custom_id": cid, "error": None,
                    "response": {"status_code": 400, "request_id": "req_fake",
                                 "body": _error(str(exc), "invalid_request_error")}}
        extra = {"body": body, "answer": answer} if self.keep_bodies else {}
        self._record(f"batch:{batch['id']}", digest, "ok", extra)
        if anthropic:
            return {"custom_id": cid, "result": {"type": "succeeded", "message": answer}}
        return {"id": f"batch_req_{cid[:12]}", "custom_id": cid, "error": None,
                "response": {"status_code": 200, "request_id": "req_fake", "body": answer}}

    @staticmethod
    def _expired(batch: dict, r: dict) -> dict:
        cid = r["custom_id"]
        if batch["api"] == "anthropic":
            return {"custom_id": cid, "result": {"type": "expired"}}
        return {"id": f"batch_req_{cid[:12]}", "custom_id": cid, "response": None,
                "error": {"code": "batch_expired", "message": "This request could not be "
                          "executed before the completion window expired."}}

    def _write_outputs(self, batch: dict) -> None:
        ok: list[str] = []
        bad: list[str] = []
        for r in batch["requests"]:
            row = batch["results"][r["custom_id"]]
            good = (row.get("response") or {}).get("status_code") == 200
            (ok if good else bad).append(json.dumps(row))
        for name, rows in (("output_file_id", ok), ("error_file_id", bad)):
            if rows:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = ("\n".join(rows) + "\n").encode()
                batch[name] = fid

    def _batch_object(self, batch: dict) -> dict:
        n, answered = len(batch["requests"]), len(batch["results"])
        failed = len(batch["failed"]) + sum(
            1 for r in batch["results"].values()
            if r.get("error") or (r.get("result") or {}).get("type") == "expired")
        created = batch["created"]
        if batch["api"] == "anthropic":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            expired = sum(1 for r in batch["results"].values() if r["result"]["type"] == "expired")
            return {
                "id": batch["id"], "type": "message_batch",
                "processing_status": "ended" if batch["ended"] else "in_progress",
                "request_counts": {"processing": n - answered, "succeeded":
                                   answered - len(batch["failed"]) - expired,
                                   "errored": len(batch["failed"]), "canceled": 0,
                                   "expired": expired},
                "created_at": stamp, "expires_at": stamp, "ended_at": stamp if batch["ended"]
                else None, "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.base_url}/messages/batches/{batch['id']}/results"
                if batch["ended"] else None,
            }
        return {
            "id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": None, "input_file_id": batch["input_file_id"], "completion_window": "24h",
            "status": batch["status"], "output_file_id": batch.get("output_file_id"),
            "error_file_id": batch.get("error_file_id"), "created_at": created,
            "request_counts": {"total": n, "completed": answered - failed, "failed": failed},
            "metadata": batch.get("metadata"),
        }

    # running ---------------------------------------------------------------------------------
    async def serve(self, ready: threading.Event | None = None) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=2048)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    def start_in_thread(self) -> FakeServer:
        """Serve from a daemon thread; ``self.port`` is set when this returns."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        t = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self.serve(ready),),
            daemon=True,
            name="fake-llm-server",
        )
        t.start()
        if not ready.wait(10):
            raise RuntimeError("the fake LLM server did not start")
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


async def _send(
    writer, status: int, obj, raw_body: bytes | None = None, extra: dict | None = None
) -> None:
    body = raw_body if raw_body is not None else json.dumps(obj).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "content-type: application/json",
        f"content-length: {len(body)}",
    ]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


def _error(message: str, kind: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _file_object(fid: str, name: str, purpose: str, size: int) -> dict:
    return {"id": fid, "object": "file", "bytes": size, "created_at": int(time.time()),
            "filename": name, "purpose": purpose, "status": "processed"}


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if not size:
            await reader.readuntil(b"\r\n")
            return out
        out += await reader.readexactly(size)
        await reader.readexactly(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--log", default=None, help="append one JSON line per request here")
    ap.add_argument("--slow-rate", type=float, default=0.0, help="share of slow answers")
    ap.add_argument("--slow-latency", type=float, default=5.0, help="seconds a slow answer takes")
    ap.add_argument("--max-choices", type=int, default=None,
                    help="answer at most this many choices per call (llama.cpp ignores n)")
    ap.add_argument("--cache-min-tokens", type=int, default=1024,
                    help="smallest prompt prefix the emulated prompt cache keeps")
    ap.add_argument("--answer-chars", default=None,
                    help="characters a generated answer has, or 'examples': as long as the "
                         "in-context examples the request shows (default: one line)")
    args = ap.parse_args(argv)
    srv = FakeServer(
        latency=args.latency, fault_rate=args.fault_rate, log_path=args.log, port=args.port,
        slow_rate=args.slow_rate, slow_latency=args.slow_latency, max_choices=args.max_choices,
        cache_min_tokens=args.cache_min_tokens,
        answer_chars=(args.answer_chars if args.answer_chars in (None, "examples")
                      else int(args.answer_chars)),
    )

    async def run() -> None:
        task = asyncio.create_task(srv.serve())
        while not srv.port:
            await asyncio.sleep(0.01)
        print(f"listening on {srv.base_url}", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
