"""One LLM session per build: the request store, shared limits, accounting, and a client per
generator.

The session owns a private asyncio loop in a daemon thread. ``Client.run`` (called from any
executor thread) hands its requests to that loop and waits, so every step shares the same
per-minute limits, concurrency caps and budget. Each sample is written to the store the moment
it arrives; a frozen session serves only stored samples and never opens a connection.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vlitc.errors import BudgetExceeded, ConfigurationError, GenerationError
from vlitc.llm.cache import ResponseCache, load_store
from vlitc.llm.cost import Accounting, cost, price_for
from vlitc.llm.defaults import DEFAULTS
from vlitc.llm.limits import Limits, estimate_tokens
from vlitc.llm.providers import Provider, make_provider
from vlitc.llm.retry import ProviderError, with_retries
from vlitc.llm.types import (
    SAMPLING_KEYS,
    Request,
    Response,
    base_request,
    identity,
    sample_key,
)
from vlitc.llm.vision import ImageStore, Prep, has_images, image_tokens, text_of

T = TypeVar("T")

#: defaults of the generator params the session reads (the generator ops' schemas repeat them)
#: generator params that are sampling defaults for its requests
SAMPLING_DEFAULTS = ("temperature", "top_p", "max_tokens", "seed", "stop")
PROGRESS_EVERY = 0.25  # seconds between progress events


@dataclass
class _Plan:
    """One request on its way: its canonical form, per-sample keys, entries and errors."""

    request: Request
    base: dict
    keys: list[str]
    entries: list[dict | None]
    errors: dict[int, str] = field(default_factory=dict)
    fresh: bool = False  # at least one sample was fetched now
    raw: Any = None  # provider body of the first fresh call


@dataclass
class _RunState:
    step: str
    total: int
    done: int = 0
    unsent: int = 0
    fatal: BaseException | None = None
    last_emit: float = 0.0


class Client:
    """Sends requests for one generator; ``run`` is synchronous and thread-safe."""

    def __init__(self, session: LLMSession, name: str, config: dict):
        self.session, self.name = session, name
        self.config = {**DEFAULTS, **config}
        self.provider_name = config["provider"]
        self.model = config.get("model") or ("mock" if self.provider_name == "mock" else "")
        if not self.model:
            raise ConfigurationError(f"generator {name!r} names no model")
        self.defaults = {k: config[k] for k in SAMPLING_DEFAULTS if config.get(k) is not None}
        self.price = price_for(self.model, config.get("prices"))
        if self.price is None:
            session.accounting.unpriced.add(self.model)
        self.limits = session._limits_for(self.provider_name, self.model, config)
        self.vision = bool(config.get("vision"))
        self.prep = Prep.for_generator(self.provider_name, config.get("image"))
        self.identity = identity(self.provider_name, config)
        self._provider: Provider | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.provider_name} {self.model})"

    def provider(self) -> Provider:
        """The backend, built on first use (a fully cached build never needs a key)."""
        if self._provider is None:
            self._provider = make_provider(self.name, self.config)
        return self._provider

    def run(self, requests: list[Request], step: str = "") -> list[Response]:
        """Answer ``requests`` in order, from the store or by calling the provider."""
        requests = list(requests)
        if not requests:
            return []
        return self.session._submit(self._run(requests, step))

    async def _run(self, requests: list[Request], step: str) -> list[Response]:
        plans = [self._plan(r) for r in requests]
        missing = [(p, [i for i, e in enumerate(p.entries) if e is None]) for p in plans]
        missing = [(p, idx) for p, idx in missing if idx]
        if missing and self.session.frozen:
            self._frozen_miss(missing, step)
        total = sum(len(p.keys) for p in plans)
        state = _RunState(step, total, done=total - sum(len(i) for _, i in missing))
        cached = state.done
        self.session.accounting.add(step, self.name, cached=cached)
        units = []
        for plan, idx in missing:
            groups = [idx] if self.provider().supports_n else [[i] for i in idx]
            units += [self._unit(plan, g, state) for g in groups]
        self._progress(state, force=True)
        if units:
            await asyncio.gather(*units)
        self._progress(state, force=True)
        if state.fatal is not None:
            raise state.fatal
        self.session.accounting.raise_exhausted(step, state.unsent)
        out = [self._response(p) for p in plans]
        self.session.accounting.add(step, self.name, samples=sum(len(r.texts) for r in out))
        return out

    def _plan(self, req: Request) -> _Plan:
        images = has_images(req.messages)
        if images and not self.vision:
            raise ConfigurationError(
                f"generator {self.name!r} was sent an image but does not declare vision: true "
                "(only vision models read images)"
            )
        base = base_request(
            self.provider_name,
            self.model,
            req,
            self.defaults,
            image_key=self._image_key if images else None,
            identity=self.identity,
        )
        keys = [sample_key(base, i) for i in range(req.n)]
        return _Plan(req, base, keys, [self.session.cache.get(k) for k in keys])

    def _image_key(self, src: Any) -> dict:
        return self.session.images.key_part(src, self.prep)

    async def _wire(self, messages: list[dict]) -> tuple[list[dict], list[tuple[int, int]]]:
        """The messages as sent: each image part prepared (once, cached) and attached as base64;
        and the prepared sizes of the images."""
        out, sizes = [], []
        for m in messages:
            if isinstance(m["content"], str):
                out.append(m)
                continue
            parts = []
            for p in m["content"]:
                if p["type"] == "text":
                    parts.append(p)
                    continue
                src = p["image"]
                part: dict[str, Any] = {"type": "image", "sha256": src.sha256}
                if self.prep.urls and src.url:
                    part["url"] = src.url
                    w, h = self.prep.target(*self.session.images.size_of(src))
                else:
                    prep = await asyncio.to_thread(self.session.images.prepared, src, self.prep)
                    w, h = prep.width, prep.height
                    part.update(media_type=prep.media_type, data=prep.b64(), width=w, height=h)
                if self.prep.detail is not None:
                    part["detail"] = self.prep.detail
                sizes.append((w, h))
                parts.append(part)
            out.append({"role": m["role"], "content": parts})
        return out, sizes

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        """Tokens the prepared images of one call cost on this generator."""
        prices = self.config.get("prices") or {}
        return sum(
            image_tokens(self.provider_name, self.model, w, h, self.prep.detail, prices)
            for w, h in sizes
        )

    def _frozen_miss(self, missing: list[tuple[_Plan, list[int]]], step: str) -> None:
        plan, idx = missing[0]
        last = next(
            text_of(m["content"]) for m in reversed(plan.request.messages) if m["role"] == "user"
        )
        raise GenerationError(
            f"frozen build: generator {self.label} in step {step or '?'} has no stored response "
            f"for request {plan.keys[idx[0]][:16]} (sample {idx[0]}; user message starts "
            f"{last[:80]!r}); {len(missing)} request(s) missing in all. A frozen rebuild makes no "
            "calls: use the release's llm_responses.jsonl or build without --frozen."
        )

    async def _unit(self, plan: _Plan, indices: list[int], state: _RunState) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(int(self.config["max_concurrency"]))
        async with self._sem:
            if state.fatal is not None or self.session.accounting.exhausted():
                state.unsent += len(indices)
                return
            try:
                await self._fetch(plan, indices, state)
            except ProviderError as exc:
                for i in indices:
                    plan.errors.setdefault(i, str(exc))
                self.session.accounting.add(state.step, self.name, failed=len(indices))
                if not exc.retryable:
                    state.fatal = GenerationError(
                        f"generator {self.label} in step {state.step or '?'}: {exc} "
                        "(not retryable: check the model name, key and request)"
                    )
            except (ConfigurationError, GenerationError, BudgetExceeded) as exc:
                state.fatal = exc

    async def _fetch(self, plan: _Plan, indices: list[int], state: _RunState) -> None:
        params: dict[str, Any] = {"model": self.model, "messages": plan.base["messages"]}
        params.update({k: plan.base[k] for k in SAMPLING_KEYS})
        sizes: list[tuple[int, int]] = []
        if has_images(plan.request.messages):
            params["messages"], sizes = await self._wire(plan.request.messages)
        text_msgs = [{"content": text_of(m["content"])} for m in params["messages"]]
        img_tokens = self.image_tokens(sizes)
        provider = self.provider()
        remaining = list(indices)
        while remaining:
            est = estimate_tokens(text_msgs, params.get("max_tokens"), len(remaining)) + img_tokens
            await self.limits.acquire(est)
            n, first = len(remaining), remaining[0]
            comp = await with_retries(
                functools.partial(provider.complete, params, n, first),
                max_retries=int(self.config["max_retries"]),
                base=float(self.config["retry_backoff"]),
                on_retry=lambda exc: self.session.accounting.add(state.step, self.name, retries=1),
            )
            got = list(zip(remaining, comp.texts, comp.finish_reasons, strict=False))
            if sizes:
                self.session.accounting.add(
                    state.step, self.name, images=len(sizes), image_tokens=img_tokens
                )
            self._store(plan, got, comp.usage, comp.raw, state)
            self.limits.settle(est, sum(comp.usage.values()))
            remaining = remaining[len(got) :]

    def _store(self, plan: _Plan, got: list, usage: dict, raw: Any, state: _RunState) -> None:
        p_tok, c_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        for j, (i, text, reason) in enumerate(got):
            share = c_tok // len(got) + (c_tok % len(got) if j == 0 else 0)
            entry = {
                "text": text,
                "finish_reason": reason,
                "provider": self.provider_name,
                "model": self.model,
                "usage": {"prompt_tokens": p_tok if j == 0 else 0, "completion_tokens": share},
            }
            self.session.cache.set(plan.keys[i], entry)
            plan.entries[i] = entry
        usd = cost(self.price, p_tok, c_tok)
        self.session.accounting.add(
            state.step, self.name, calls=1, prompt_tokens=p_tok, completion_tokens=c_tok, usd=usd
        )
        if not plan.fresh:
            plan.fresh, plan.raw = True, raw
        state.done += len(got)
        self._progress(state)

    def _progress(self, state: _RunState, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - state.last_emit < PROGRESS_EVERY and state.done < state.total:
            return
        state.last_emit = now
        tot = self.session.accounting.total
        step = self.session.accounting.steps.get(state.step)
        self.session.emit(
            {
                "event": "llm",
                "step": state.step,
                "generator": self.name,
                "done": state.done,
                "total": state.total,
                "usd": round(tot.usd, 6),  # the whole build so far
                "tokens": tot.prompt_tokens + tot.completion_tokens,
                # this step's own calls, tokens and spend, its retries and failures
                "step_llm": step.as_dict() if step is not None else {},
            }
        )

    def _response(self, plan: _Plan) -> Response:
        ok = [e for e in plan.entries if e is not None]
        self.session.used.update(
            k for k, e in zip(plan.keys, plan.entries, strict=True) if e is not None
        )
        usage = {
            "prompt_tokens": sum(e["usage"].get("prompt_tokens", 0) for e in ok),
            "completion_tokens": sum(e["usage"].get("completion_tokens", 0) for e in ok),
        }
        error = None
        if plan.errors or len(ok) < len(plan.keys):
            first = min(plan.errors) if plan.errors else 0
            error = plan.errors.get(first, "not sent (the step stopped)")
            error = f"generator {self.label}: sample {first}: {error}"
        return Response(
            texts=[] if error else [e["text"] for e in ok],
            finish_reasons=[] if error else [e.get("finish_reason", "") for e in ok],
            usage=usage,
            request_id=plan.keys[0],
            cached=not plan.fresh,
            error=error,
            keys=list(plan.keys),
            raw=plan.raw,
        )


class LLMSession:
    """Everything a build shares about LLM calls. Create with :func:`vlitc.llm.session`."""

    def __init__(
        self,
        recipe: dict,
        cache_dir: Path,
        emit: Callable[[dict], None] | None = None,
        frozen: bool = False,
        store: Path | None = None,
    ):
        self.generators: dict[str, dict] = dict(recipe.get("generators") or {})
        self.emit = emit or (lambda event: None)
        self.frozen = frozen
        self.cache = ResponseCache(Path(cache_dir), load_store(store) if store else None)
        self.images = ImageStore(Path(cache_dir) / "images")
        self.accounting = Accounting(budget=dict(recipe.get("budget") or {}))
        self.used: set[str] = set()
        self._limits: dict[tuple[str, str], Limits] = {}
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def client(self, name: str) -> Client:
        """The client of generator ``name`` (one per generator, created on first use)."""
        with self._lock:
            if name not in self._clients:
                if name not in self.generators:
                    known = ", ".join(sorted(self.generators)) or "none"
                    raise ConfigurationError(f"unknown generator {name!r} (recipe has: {known})")
                self._clients[name] = Client(self, name, self.generators[name])
            return self._clients[name]

    def _limits_for(self, provider: str, model: str, config: dict) -> Limits:
        key = (provider, model)
        if key not in self._limits:
            self._limits[key] = Limits(config.get("rpm"), config.get("tpm"))
        else:
            self._limits[key].tighten(config.get("rpm"), config.get("tpm"))
        return self._limits[key]

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="vlitc-llm", daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def usage(self) -> dict:
        """Usage and cost per step and per generator (JSON-able; the manifest's ``llm``)."""
        out = self.accounting.as_dict()
        out["steps"].pop("", None)
        out["frozen"] = self.frozen
        out["warnings"] = list(self.cache.warnings)
        out["images_prepared"] = self.images.prepared_count
        return out

    def export_store(self, path: Path) -> Path:
        """Write the responses this build used into a release folder (``llm_responses.jsonl``)."""
        return self.cache.export(self.used, Path(path))

    def close(self) -> None:
        """Close the providers' connections, stop the loop, close the store."""
        if self._loop is not None:
            providers = [c._provider for c in self._clients.values() if c._provider is not None]

            async def shutdown() -> None:
                await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            self._loop.close()
            self._loop = None
        self.cache.close()
        self.images.close()

    def __enter__(self) -> LLMSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def session(
    recipe: dict,
    cache_dir: Path,
    emit: Callable[[dict], None] | None = None,
    frozen: bool = False,
    store: Path | None = None,
) -> LLMSession:
    """Open the LLM session of a build (see :class:`LLMSession`)."""
    return LLMSession(recipe, cache_dir, emit, frozen=frozen, store=store)
