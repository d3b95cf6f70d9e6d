"""One LLM session per build: the request store, shared limits, accounting, and a client per
generator.

The session owns a private asyncio loop in a daemon thread. ``Client.stream`` (called from any
executor thread) reads its items lazily, looks each request up in the store, hands the missing
ones to that loop and yields the answers in input order: a bounded window of requests stays in
flight across the whole step (no batch boundaries), each answer is committed to the store the
moment it arrives, and a slow answer holds up only itself (the answers behind it wait in a
bounded reorder buffer while sending goes on). Every step shares the same per-minute limits,
concurrency caps and budget.

Before a request is sent, the session:

* waits for the same request in flight in this session, or in another process on the same
  cache (a lease per sample key in the store; a lease whose process died is taken over), so two
  builds of one recipe pay once;
* reserves its estimated spend against ``budget`` (settled with the real usage on the answer),
  so the requests in flight cannot overshoot ``max_usd`` / ``max_tokens``.

A frozen session serves only stored samples and never opens a connection. Providers sit behind
:class:`vlitc.llm.providers.Provider` (``complete(params, n, first)``). A generator with
``batch: true`` sends what the store lacks through its provider's batch API instead
(:mod:`vlitc.llm.batch`), with the same requests, keys, entries and accounting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vlitc.errors import BudgetExceeded, ConfigurationError, GenerationError
from vlitc.llm.cache import ResponseCache, load_store
from vlitc.llm.cost import CACHE_USAGE, Accounting, cost, generator_price, saved
from vlitc.llm.defaults import DEFAULTS
from vlitc.llm.limits import Limits, estimate_prompt_tokens
from vlitc.llm.providers import Provider, make_provider
from vlitc.llm.retry import ProviderError, with_retries
from vlitc.llm.types import (
    SAMPLING_KEYS,
    Request,
    Response,
    base_request,
    identity,
    response_mode,
    sample_key,
    with_mode,
)
from vlitc.llm.vision import ImageStore, Prep, has_images, image_tokens, text_of

if TYPE_CHECKING:
    from vlitc.llm.fanout import Share

T = TypeVar("T")

#: generator params that are sampling defaults for its requests
SAMPLING_DEFAULTS = ("temperature", "top_p", "max_tokens", "seed", "stop")
PROGRESS_EVERY = 0.25  # seconds between progress events
#: completion tokens per sample assumed for a budget reservation when a request sets no
#: max_tokens (raised to the longest answer seen so far)
DEFAULT_COMPLETION_ESTIMATE = 256
#: answers held for in-order delivery, per unit of max_concurrency (at least REORDER_MIN): a
#: slow answer at the head stalls sending only after this many later answers have arrived
REORDER_PER_SLOT = 32
REORDER_MIN = 1024
LEASE_POLL = (0.02, 0.5)  # first and longest wait between looks at a request another holds


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

    @property
    def missing(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e is None]


@dataclass
class _RunState:
    step: str
    total: int = 0
    done: int = 0
    unsent: int = 0
    budget: str | None = None  # the budget limit that stopped sending
    fatal: BaseException | None = None
    stop: bool = False  # send nothing more (the consumer stopped or failed)
    last_emit: float = 0.0
    batch: dict | None = None  # where this step's provider batches stand (``batch: true``)


def _seeded(params: dict, first: int) -> dict:
    """The params of a call whose first sample is ``first``: with a fixed ``seed``, each later
    call (a server that returned fewer choices than ``n``, or a provider without ``n``) takes
    ``seed + first``, so that it does not repeat the first call's texts. The request key keeps
    the declared seed and the sample index."""
    seed = params.get("seed")
    if not first or seed is None:
        return params
    return {**params, "seed": int(seed) + first}


class Client:
    """Sends requests for one generator; ``run`` and ``stream`` are synchronous and thread-safe."""

    def __init__(self, session: LLMSession, name: str, config: dict):
        self.session, self.name = session, name
        self.config = {**DEFAULTS, **config}
        self.provider_name = config["provider"]
        self.model = config.get("model") or ("mock" if self.provider_name == "mock" else "")
        if not self.model:
            raise ConfigurationError(f"generator {name!r} names no model")
        self.defaults = {k: config[k] for k in SAMPLING_DEFAULTS if config.get(k) is not None}
        self.price = generator_price({**config, "model": self.model})
        if self.price is None:
            session.accounting.unpriced.add(self.model)
        self.limits = session._limits_for(self.provider_name, self.model, config)
        self.limit_key = f"{self.provider_name}:{self.model}"  # its limits in a Governor
        self.vision = bool(config.get("vision"))
        self.prep = Prep.for_generator(self.provider_name, config.get("image"))
        self.identity = identity(self.provider_name, config)
        self.response_mode = response_mode(self.provider_name, config)
        self._provider: Provider | None = None
        self._sem: asyncio.Semaphore | None = None
        self._longest_answer = DEFAULT_COMPLETION_ESTIMATE  # completion tokens, for reservations

    @property
    def label(self) -> str:
        return f"{self.name} ({self.provider_name} {self.model})"

    @property
    def concurrency(self) -> int:
        return int(self.config["max_concurrency"])

    def provider(self) -> Provider:
        """The backend, built on first use (a fully cached build never needs a key)."""
        if self._provider is None:
            self._provider = make_provider(self.name, self.config)
        return self._provider

    # the public calls -----------------------------------------------------------------------
    def run(self, requests: Iterable[Request], step: str = "") -> list[Response]:
        """Answer ``requests`` in order, from the store or by calling the provider."""
        return [resp for _, resp in self.stream(requests, _same, step) if resp is not None]

    def stream(
        self, items: Iterable[T], request: Callable[[T], Request | None], step: str = ""
    ) -> Iterator[tuple[T, Response | None]]:
        """``(item, response)`` for each of ``items`` in input order; ``request(item)`` gives its
        request, or ``None`` to pass the item through (``response`` is then ``None``).

        Items are read as sending goes on, never all at once. A request that finally fails comes
        back with ``response.error``; a fatal error (a non-retryable status, the budget) stops
        sending, lets the requests in flight finish (their answers are stored) and is raised."""
        if self.config.get("batch") and not self.session.frozen:
            from vlitc.llm.batch import stream_batched

            yield from stream_batched(self, items, request, step)
            return
        state = _RunState(step)
        pending: deque[tuple[Any, _Plan | None, concurrent.futures.Future | None]] = deque()
        bound = max(REORDER_MIN, REORDER_PER_SLOT * self.concurrency)
        try:
            for item in items:
                req = request(item)
                plan = fut = None
                if req is not None:
                    plan = self._plan(req)
                    state.total += len(plan.keys)
                    missing = plan.missing
                    cached = len(plan.keys) - len(missing)
                    state.done += cached
                    if cached:
                        self.session.accounting.add(step, self.name, cached=cached)
                    if missing:
                        if self.session.frozen:
                            self._frozen_miss(plan, missing[0], step)
                        fut = self.session._spawn(self._answer(plan, missing, state))
                pending.append((item, plan, fut))
                while pending and (pending[0][2] is None or pending[0][2].done()):
                    yield self._finish(*pending.popleft(), state)
                while len(pending) >= bound:
                    yield self._finish(*pending.popleft(), state)
                if state.fatal is not None:
                    break
            while pending and state.fatal is None:
                yield self._finish(*pending.popleft(), state)
            self._raise_if_stopped(state)
        except (KeyboardInterrupt, SystemExit):
            state.stop = True
            for _, _, fut in pending:
                if fut is not None:
                    fut.cancel()
            raise
        finally:
            state.stop = True
            for _, _, fut in pending:  # unsent ones return at once; in-flight ones finish
                if fut is not None and not fut.cancelled():
                    concurrent.futures.wait([fut])
            self._progress(state, force=True)
        self._raise_if_stopped(state)

    def lookup(self, req: Request) -> list[bool]:
        """Which samples of ``req`` the store holds, by the keys the build would send them
        under; nothing is sent (``vlitc plan``)."""
        return [e is not None for e in self._plan(req).entries]

    # delivery -------------------------------------------------------------------------------
    def _finish(self, item: Any, plan: _Plan | None, fut: Any, state: _RunState) -> tuple:
        if fut is not None:
            fut.result()  # re-raises a bug in the loop; failures are in plan.errors
        if plan is None:
            return item, None
        resp = self._response(plan)
        if resp.error and not plan.errors:  # not sent because the step stopped: say why
            self._raise_if_stopped(state)
        self.session.accounting.add(state.step, self.name, samples=len(resp.texts))
        return item, resp

    def _raise_if_stopped(self, state: _RunState) -> None:
        if state.fatal is not None:
            raise state.fatal
        if state.budget is not None:
            raise BudgetExceeded(
                f"budget reached in step {state.step}: {state.budget}; {state.unsent} "
                "request(s) not sent. Everything generated so far is cached: raise the budget and "
                "rebuild to continue."
            )

    def _plan(self, req: Request) -> _Plan:
        req = with_mode(req, self.response_mode)
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
                    prep = self.session.images.in_memory(src, self.prep)
                    if prep is None:  # from disk, or prepared now: off the event loop
                        prep = await asyncio.to_thread(
                            self.session.images.prepared, src, self.prep
                        )
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

    def _frozen_miss(self, plan: _Plan, index: int, step: str) -> None:
        last = next(m["content"] for m in reversed(plan.request.messages) if m["role"] == "user")
        raise GenerationError(
            f"frozen build: generator {self.label} in step {step or '?'} has no stored response "
            f"for request {plan.keys[index][:16]} (sample {index}; user message starts "
            f"{text_of(last)[:80]!r}). A frozen rebuild makes no calls: use the release's "
            "llm_responses.jsonl or build without --frozen."
        )

    # sending (on the session's loop) ----------------------------------------------------------
    async def _answer(self, plan: _Plan, missing: list[int], state: _RunState) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        async with self._sem:
            if state.stop or state.fatal is not None:
                state.unsent += len(missing)
                return
            try:
                one_call = self.provider().supports_n and self.config.get("supports_n") is not False
                groups = [missing] if one_call else [[i] for i in missing]
                for group in groups:
                    await self._fetch(plan, group, state)
            except ProviderError as exc:
                why = str(exc)
                asked = plan.request.response_format is not None
                if asked and (not exc.retryable or "response_format" in why):
                    why += (f" (a server that does not take response_format "
                            f"{self.response_mode!r} needs the generator's response_format set "
                            "to another way, or none)")
                for i in plan.missing:
                    plan.errors.setdefault(i, why)
                self.session.accounting.add(state.step, self.name, failed=len(plan.missing))
                if not exc.retryable:
                    state.fatal = GenerationError(
                        f"generator {self.label} in step {state.step or '?'}: {why} "
                        "(not retryable: check the model name, key and request)"
                    )
            except (ConfigurationError, GenerationError) as exc:
                state.fatal = exc

    async def _fetch(self, plan: _Plan, indices: list[int], state: _RunState) -> None:
        """Send the samples ``indices`` of ``plan`` (one call for several where the provider
        takes ``n``), except those another sender answers meanwhile."""
        todo, wait = list(indices), LEASE_POLL[0]
        while todo:
            ours, todo = await self.session._own(plan, todo)
            if ours:
                try:
                    await self._send(plan, ours, state)
                finally:
                    self.session._disown(plan, ours)
                wait = LEASE_POLL[0]
            elif todo:  # every one of them is on its way in another process: look again soon
                await asyncio.sleep(wait)
                wait = min(wait * 2, LEASE_POLL[1])

    async def call_params(self, plan: _Plan) -> tuple[dict, list[tuple[int, int]]]:
        """What a provider is called with for ``plan`` (its images prepared and attached), and
        the prepared images' sizes."""
        params: dict[str, Any] = {"model": self.model, "messages": plan.base["messages"]}
        params.update({k: plan.base[k] for k in SAMPLING_KEYS})
        params["cache_prefix"] = plan.request.cache_prefix  # billing only, not in the key
        sizes: list[tuple[int, int]] = []
        if has_images(plan.request.messages):
            params["messages"], sizes = await self._wire(plan.request.messages)
        return params, sizes

    async def _send(self, plan: _Plan, remaining: list[int], state: _RunState) -> None:
        params, sizes = await self.call_params(plan)
        img_tokens = self.image_tokens(sizes)
        provider = self.provider()
        while remaining:
            n = len(remaining)
            prompt_est = estimate_prompt_tokens(params["messages"]) + img_tokens
            tokens_est = prompt_est + n * (params.get("max_tokens") or self._longest_answer)
            usd_est = cost(self.price, prompt_est, tokens_est - prompt_est)
            if not await self._admit(usd_est, tokens_est, n, state):
                return
            try:
                comp = await with_retries(
                    functools.partial(provider.complete, _seeded(params, remaining[0]), n,
                                      remaining[0]),
                    max_retries=int(self.config["max_retries"]),
                    base=float(self.config["retry_backoff"]),
                    on_retry=lambda exc: self.session.accounting.add(
                        state.step, self.name, retries=1
                    ),
                )
            except BaseException:
                self._settle(usd_est, tokens_est, 0.0, 0, answered=False)
                raise
            got = list(zip(remaining, comp.texts, comp.finish_reasons, strict=False))
            if sizes:
                self.session.accounting.add(
                    state.step, self.name, images=len(sizes), image_tokens=img_tokens
                )
            usd = self._store(plan, got, comp.usage, comp.raw, state)
            used = int(comp.usage.get("prompt_tokens", 0)) + int(comp.usage.get("completion_tokens", 0))
            self._settle(usd_est, tokens_est, usd, used, answered=True)
            remaining = remaining[len(got) :]

    async def _admit(self, usd: float, tokens: int, n: int, state: _RunState) -> bool:
        """Reserve the estimated spend of one call and wait for its turn under the per-minute
        limits (this session's, or the build's :class:`~vlitc.llm.limits.Governor` when the
        step fans out); ``False`` when the budget leaves no room."""
        while True:
            if state.stop or state.budget is not None:
                state.unsent += n
                return False
            share = self.session.share
            if share is None:
                verdict, delay = self.session.accounting.reserve(usd, tokens), 0.0
            else:
                verdict, delay = await share.admit(self.limit_key, self.config.get("rpm"),
                                                   self.config.get("tpm"), usd, tokens)
            if verdict is None:
                if share is None:
                    await self.limits.acquire(tokens)
                elif delay > 0:
                    await asyncio.sleep(delay)
                return True
            if verdict != "wait":
                state.budget = verdict
                state.unsent += n
                return False
            await asyncio.sleep(0.02)  # only the spend in flight is in the way: wait for it

    def _settle(self, usd_est: float, tokens_est: int, usd: float, tokens: int,
                answered: bool) -> None:
        """Give back a call's reservation (its real spend is in the accounting already) and
        correct the token limit with its real usage."""
        share = self.session.share
        if share is not None:
            share.settle(self.limit_key, usd_est, tokens_est, usd, tokens, answered)
            return
        self.session.accounting.settle(usd_est, tokens_est)
        if answered:
            self.limits.settle(tokens_est, tokens)

    def entries(self, texts: list[str], reasons: list[str], usage: dict) -> list[dict]:
        """The store entries of one call's samples: the call's prompt (and prompt-cache) tokens
        on the first, its completion tokens shared out (the same whichever path sent it)."""
        p_tok, c_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        cached = {k: int(usage.get(k, 0)) for k in CACHE_USAGE if usage.get(k)}
        out = []
        for j, (text, reason) in enumerate(zip(texts, reasons, strict=True)):
            share = c_tok // len(texts) + (c_tok % len(texts) if j == 0 else 0)
            out.append({
                "text": text,
                "finish_reason": reason,
                "provider": self.provider_name,
                "model": self.model,
                "usage": {"prompt_tokens": p_tok if j == 0 else 0, "completion_tokens": share,
                          **(cached if j == 0 else {})},
            })
        return out

    def account(self, step: str, usage: dict, samples: int, **extra: int) -> float:
        """Count one answered call of ``samples`` samples, its tokens and what it cost (returned)."""
        p_tok, c_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        read = int(usage.get("cache_read_tokens", 0))
        write = int(usage.get("cache_write_tokens", 0))
        if samples:
            self._longest_answer = max(self._longest_answer, c_tok // samples + 1)
        usd = cost(self.price, p_tok, c_tok, read, write)
        self.session.accounting.add(
            step, self.name, calls=1, prompt_tokens=p_tok, completion_tokens=c_tok,
            cache_read_tokens=read, cache_write_tokens=write, usd=usd,
            usd_saved=saved(self.price, read, write), **extra,
        )
        return usd

    def _store(self, plan: _Plan, got: list, usage: dict, raw: Any, state: _RunState) -> float:
        """Commit the answers of one call; returns what it cost."""
        made = self.entries([t for _, t, _ in got], [r for _, _, r in got], usage)
        for (i, _, _), entry in zip(got, made, strict=True):
            self.session.cache.set(plan.keys[i], entry)
            self.session._answered.add(plan.keys[i])
            plan.entries[i] = entry
        usd = self.account(state.step, usage, len(got))
        if not plan.fresh:
            plan.fresh, plan.raw = True, raw
        state.done += len(got)
        self._progress(state)
        return usd

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
                **({"batch": state.batch} if state.batch else {}),
            }
        )

    def _response(self, plan: _Plan) -> Response:
        ok = [e for e in plan.entries if e is not None]
        self.session.used.update(
            k for k, e in zip(plan.keys, plan.entries, strict=True) if e is not None
        )
        usage = {k: sum(e["usage"].get(k, 0) for e in ok)
                 for k in ("prompt_tokens", "completion_tokens", *CACHE_USAGE)}
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


def _same(x: Any) -> Any:
    return x


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
        self._inflight: dict[str, asyncio.Future] = {}  # sample key -> its answer in this session
        self._heartbeat: asyncio.Task | None = None
        self._shared = False  # another session uses the cache: lease what is sent
        self._answered: set[str] = set()  # keys this session stored (reread, never resent)
        self._joining: asyncio.Task | None = None
        self._share: Share | None = None

    def client(self, name: str) -> Client:
        """The client of generator ``name`` (one per generator, created on first use)."""
        with self._lock:
            if name not in self._clients:
                if name not in self.generators:
                    known = ", ".join(sorted(self.generators)) or "none"
                    raise ConfigurationError(f"unknown generator {name!r} (recipe has: {known})")
                self._clients[name] = Client(self, name, self.generators[name])
            return self._clients[name]

    @property
    def share(self) -> Share | None:
        """The build's shared limits and budget once an LLM step fans out (see
        :mod:`vlitc.llm.fanout`); a session with one leases every request it sends."""
        return self._share

    @share.setter
    def share(self, share: Share | None) -> None:
        self._share = share
        self.cache.always_lease = share is not None

    def _limits_for(self, provider: str, model: str, config: dict) -> Limits:
        key = (provider, model)
        if key not in self._limits:
            self._limits[key] = Limits(config.get("rpm"), config.get("tpm"))
        else:
            self._limits[key].tighten(config.get("rpm"), config.get("tpm"))
        return self._limits[key]

    # the loop -------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="vlitc-llm", daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # one sender per sample key ----------------------------------------------------------------
    async def _own(self, plan: _Plan, indices: list[int]) -> tuple[list[int], list[int]]:
        """Split the unanswered samples ``indices`` into those this task sends now and those
        another process holds a lease on. A sample on its way in this session is awaited, and
        a sample someone answered meanwhile is read from the store (it is in neither list)."""
        await self._peers()
        for i in indices:
            other = self._inflight.get(plan.keys[i])
            if other is not None:
                await asyncio.shield(other)
        todo = []
        for i in indices:  # answered meanwhile: here (read back) or, when shared, elsewhere
            if plan.entries[i] is None and (self._shared or plan.keys[i] in self._answered):
                plan.entries[i] = self.cache.get(plan.keys[i])
            if plan.entries[i] is None:
                todo.append(i)
        free = [i for i in todo if plan.keys[i] not in self._inflight]
        wanted = [plan.keys[i] for i in free]
        claimed = self.cache.claim(wanted) if self._shared else frozenset(wanted)
        ours = []
        for i in free:
            key = plan.keys[i]
            if key not in claimed:
                continue
            if self._shared:  # answered in another process just before its lease was given back
                plan.entries[i] = self.cache.get(key)
            if plan.entries[i] is not None:
                self.cache.release([key])
            else:
                ours.append(i)
                self._inflight[key] = asyncio.get_running_loop().create_future()
        if ours:
            self._beat()
        return ours, [i for i in todo if plan.entries[i] is None and i not in ours]

    def _disown(self, plan: _Plan, indices: list[int]) -> None:
        keys = [plan.keys[i] for i in indices if plan.keys[i] in self._inflight]
        for k in keys:
            fut = self._inflight.pop(k)
            if not fut.done():
                fut.set_result(None)
        self.cache.release(keys)

    async def _peers(self) -> None:
        """Lease only while another session uses the cache. When one appears, lease what is in
        flight and wait ``JOIN_GRACE`` (the other side, noticing this session within
        ``PEERS_EVERY``, does the same), so that neither sends what the other has in flight."""
        from vlitc.llm.cache import JOIN_GRACE

        shared = self.cache.shared() or self.cache.always_lease
        if shared and not self._shared:
            self._shared = True
            if self.cache.solo_peers:  # it may have requests in flight that it has not leased
                self._joining = asyncio.get_running_loop().create_task(self._join(JOIN_GRACE))
        elif not shared:
            self._shared = False
        if self._joining is not None and not self._joining.done():
            await asyncio.shield(self._joining)

    async def _join(self, grace: float) -> None:
        self.cache.claim(list(self._inflight))
        await asyncio.sleep(grace)

    def _beat(self) -> None:
        """Keep this session's leases alive while it holds any (started on first claim)."""
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self._inflight:
            await asyncio.sleep(self.cache.lease_ttl / 3)
            self.cache.shared(force=True)  # keeps this session registered while it waits
            self.cache.renew(list(self._inflight))

    # reports --------------------------------------------------------------------------------
    def usage(self) -> dict:
        """Usage and cost per step and per generator (JSON-able; the manifest's ``llm``)."""
        out = self.accounting.as_dict()
        out["steps"].pop("", None)
        out["frozen"] = self.frozen
        out["warnings"] = list(self.cache.warnings)
        out["images_prepared"] = self.images.prepared_count
        out["images_prepare_seconds"] = round(self.images.prepare_seconds, 4)
        if self.cache.refused():
            out["warnings"].append(
                f"{self.cache.refused()} LLM cache entries were not JSON (written by an older "
                "vlitc, or planted) and were not loaded; their requests were sent again"
            )
        return out

    def export_store(self, path: Path) -> Path:
        """Write the responses this build used into a release folder (``llm_responses.jsonl``)."""
        return self.cache.export(self.used, Path(path))

    def close(self) -> None:
        """Cancel whatever is still on the loop (an interrupted build), close the providers'
        connections, stop the loop, give back the leases and close the store."""
        if self._loop is not None:
            loop = self._loop
            providers = [c._provider for c in self._clients.values() if c._provider is not None]

            async def shutdown() -> None:
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)
                await loop.shutdown_asyncgens()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=30)
            except (concurrent.futures.TimeoutError, RuntimeError):  # pragma: no cover
                pass
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            loop.close()
            self._loop = None
        self.cache.release(list(self._inflight))
        self._inflight.clear()
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
