"""Generators with ``batch: true``: the requests a step needs go through the provider's batch API
(OpenAI's Batch API, Anthropic's Message Batches) at the batch price, beside the streaming
request loop of :class:`vlitc.llm.session.Client` and on the same objects: the same canonical
requests and per-sample keys, the same store entries and the same accounting, so a response is
reused whichever path sent its request, and a later build (batch or not) pays for nothing twice.

A step's batched run:

1. reads all its items and looks each request up in the response store; only the samples the
   store lacks go into a batch, one line per call (one per sample where ``n`` samples cost ``n``
   calls, as :func:`vlitc.llm.estimate.calls_per_sample` plans it);
2. leaves out the samples an open batch recorded in the cache will answer (a build killed
   after it submitted, or one that stopped at ``batch_wait``): that batch is polled instead of
   sent again;
3. reserves each line's estimated spend against the budget, splits the lines into batches of at
   most ``batch_max_requests`` requests and the provider's size limit, submits them and records
   each batch (its id, and the sample keys of each line) in the cache the moment the provider
   accepts it;
4. polls every ``batch_poll`` seconds, showing the batches' progress, and stores each ended
   batch's answers in the response store (the same entries the streaming path writes), then
   forgets the batch;
5. sends again, in a new batch, what came back short (a server that returned fewer choices
   than ``n``: with ``seed + index``) and the requests that failed with a retryable error (up to
   ``max_retries`` rounds). A request that failed for good (expired, canceled, or out of
   retries) follows the generator's ``on_error`` like a streamed one, and is never stored: the
   next build sends it again. A non-retryable error (a 4xx) stops the step, as it does when
   streaming.

Past ``batch_wait`` seconds the step stops with the batches left open; the next build collects
them. A frozen build never batches: it serves the store.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from vlitc.errors import ConfigurationError, GenerationError
from vlitc.llm.cost import cost
from vlitc.llm.estimate import calls_per_sample
from vlitc.llm.limits import estimate_prompt_tokens
from vlitc.llm.providers import BatchItem, BatchState
from vlitc.llm.retry import ProviderError, with_retries

if TYPE_CHECKING:
    from vlitc.llm.session import Client, _Plan, _RunState

T = TypeVar("T")

#: the folder, under the response store, that records the open batches
BOOK = "batches"


class BatchBook:
    """The provider batches a response store waits for: ``batch:<id>`` holds a batch's record
    (``id``, ``generator``, ``provider``, ``model``, ``step``, ``created``, and ``items``: each
    line's custom id and the sample keys it answers), ``key:<sample key>`` the id of the open
    batch that will answer that sample. Written in one transaction as soon as the provider
    accepted the batch, removed once its results are stored. Records are JSON; one of another
    shape (a damaged or planted cache) is ignored, and its samples are sent again."""

    def __init__(self, directory: Path):
        from vlitc.diskstore import open_cache

        self._db = open_cache(Path(directory) / BOOK)

    def record(self, rec: dict) -> None:
        with self._db.transact():
            self._db.set(f"batch:{rec['id']}", rec)
            for keys in rec["items"].values():
                for k in keys:
                    self._db.set(f"key:{k}", rec["id"])

    def get(self, batch_id: str) -> dict | None:
        rec = self._db.get(f"batch:{batch_id}")
        items = rec.get("items") if isinstance(rec, dict) else None
        if not (isinstance(items, dict) and isinstance(rec.get("id"), str) and all(
                isinstance(v, list) and all(isinstance(k, str) for k in v)
                for v in items.values())):
            return None
        return rec

    def holding(self, key: str) -> str | None:
        """The open batch that will answer sample ``key``, if any."""
        bid = self._db.get(f"key:{key}")
        return bid if isinstance(bid, str) and self.get(bid) is not None else None

    def forget(self, batch_id: str) -> None:
        rec = self.get(batch_id)
        with self._db.transact():
            for keys in (rec or {}).get("items", {}).values():
                for k in keys:
                    if self._db.get(f"key:{k}") == batch_id:
                        self._db.delete(f"key:{k}")
            self._db.delete(f"batch:{batch_id}")

    def open_ids(self) -> list[str]:
        return sorted(str(k)[6:] for k in self._db.iterkeys() if str(k).startswith("batch:"))

    def close(self) -> None:
        self._db.close()


def stream_batched(
    client: Client, items: Iterable[T], request: Callable[[T], Any], step: str
) -> Iterator[tuple[T, Any]]:
    """:meth:`Client.stream` for a generator with ``batch: true``: every item is read first (a
    batch answers all at once), then the items come back in input order."""
    from vlitc.llm.session import _RunState

    state = _RunState(step)
    rows: list[tuple[T, _Plan | None]] = []
    for item in items:
        req = request(item)
        plan = client._plan(req) if req is not None else None
        if plan is not None:
            state.total += len(plan.keys)
            cached = len(plan.keys) - len(plan.missing)
            state.done += cached
            if cached:
                client.session.accounting.add(step, client.name, cached=cached)
        rows.append((item, plan))
    todo = [p for _, p in rows if p is not None and p.missing]
    if todo:
        fut = client.session._spawn(Batcher(client, todo, state).run())
        try:
            fut.result()
        except (KeyboardInterrupt, SystemExit):
            fut.cancel()
            raise
    client._progress(state, force=True)
    client._raise_if_stopped(state)
    for item, plan in rows:
        yield client._finish(item, plan, None, state)


class Batcher:
    """One step's batched requests of one generator (runs on the session's loop)."""

    def __init__(self, client: Client, plans: list[_Plan], state: _RunState):
        self.client, self.plans, self.state = client, plans, state
        self.config = client.config
        self.book = BatchBook(client.session.cache.directory)
        self.final: dict[str, str] = {}  # sample key -> why it failed for good in this build
        self.last: dict[str, str] = {}  # sample key -> its last retryable failure
        self.unsent: set[str] = set()  # sample keys the budget left out
        self.reserved: dict[str, tuple[float, int]] = {}  # custom id -> reserved (usd, tokens)
        self.progress: dict[str, BatchState] = {}
        self.per_sample = calls_per_sample({"provider": client.provider_name, **self.config})

    async def run(self) -> None:
        try:
            await self._rounds()
        except ProviderError as exc:
            self.state.fatal = GenerationError(
                f"generator {self.client.label} in step {self.state.step or '?'}: batch API: "
                f"{exc} (does the endpoint offer the batch API? set batch: false to stream)")
        except (ConfigurationError, GenerationError) as exc:
            self.state.fatal = exc
        finally:
            self.book.close()
            for custom_id in list(self.reserved):
                self._settle(custom_id)
            self._fill()

    async def _rounds(self) -> None:
        provider = self.client.provider()
        if provider.batch_limits is None:
            raise ConfigurationError(
                f"generator {self.client.name!r}: provider {self.client.provider_name} has no "
                "batch API (batch: true works with openai and anthropic)")
        retries = int(self.config["max_retries"])
        for round_ in range(retries + 2):
            self._fill()
            lines, waiting = [], set()
            for plan, group in self._groups():
                bid = self.book.holding(plan.keys[group[0]])
                if bid is not None:
                    waiting.add(bid)
                else:
                    lines.append((plan, group))
            if not lines and not waiting:
                return
            if round_ > retries and not waiting:
                for plan, group in lines:
                    for i in group:
                        self.final.setdefault(plan.keys[i], self.last.get(
                            plan.keys[i], "fewer answers than asked after the batch retries"))
                    self.client.session.accounting.add(self.state.step, self.client.name,
                                                       failed=len(group))
                return
            again = sum(plan.keys[g[0]] in self.last for plan, g in lines)
            if again:  # lines that failed with a retryable error, in a new batch
                self.client.session.accounting.add(self.state.step, self.client.name,
                                                   retries=again)
            waiting |= await self._submit(lines)
            if self.state.fatal is not None:
                return
            await self._wait(waiting)
            if self.state.fatal is not None or self.state.budget is not None:
                return

    # what to send ---------------------------------------------------------------------------
    def _fill(self) -> None:
        """Read back what the store now holds for each plan, and the failures."""
        cache = self.client.session.cache
        for plan in self.plans:
            for i in plan.missing:
                entry = cache.get(plan.keys[i])
                if entry is not None:
                    plan.entries[i] = entry
                    plan.fresh = True
                elif plan.keys[i] in self.final:
                    plan.errors[i] = self.final[plan.keys[i]]

    def _groups(self) -> Iterator[tuple[_Plan, list[int]]]:
        """The calls still to make: the missing samples of each plan, one call each or one call
        for all (``n``), less failures, what the budget left out and repeated requests."""
        seen: set[str] = set()
        for plan in self.plans:
            left = [i for i in plan.missing if plan.keys[i] not in self.final
                    and plan.keys[i] not in self.unsent and plan.keys[i] not in seen]
            seen.update(plan.keys[i] for i in left)
            if not left:
                continue
            for group in ([[i] for i in left] if self.per_sample else [left]):
                yield plan, group

    # submitting -----------------------------------------------------------------------------
    async def _submit(self, lines: list[tuple[_Plan, list[int]]]) -> set[str]:
        from vlitc.llm.session import _seeded

        client, provider = self.client, self.client.provider()
        assert provider.batch_limits is not None
        max_requests, max_bytes = provider.batch_limits
        cap = min(int(self.config.get("batch_max_requests") or max_requests), max_requests)
        chunk: list[tuple[dict, list[str], list[int]]] = []
        size, made = 0, set()
        for plan, group in lines:
            params, sizes = await client.call_params(plan)
            custom_id = plan.keys[group[0]]
            line = provider.batch_line(_seeded(params, group[0]), len(group), custom_id)
            if not await self._reserve(params, sizes, len(group), custom_id):
                self.unsent.update(plan.keys[i] for i in group)
                continue
            blob = len(orjson.dumps(line)) + 1
            if chunk and (len(chunk) >= cap or size + blob > max_bytes):
                made.add(await self._create(chunk))
                chunk, size = [], 0
            chunk.append((line, [plan.keys[i] for i in group],
                          [len(sizes), client.image_tokens(sizes)] if sizes else []))
            size += blob
        if chunk:
            made.add(await self._create(chunk))
        return made

    async def _reserve(self, params: dict, sizes: list, n: int, custom_id: str) -> bool:
        """Reserve one line's estimated spend (in this session, or with the build's governor
        when the step fans out); ``False`` (and the budget noted) when it does not fit beside
        what is spent and reserved (nothing settles before the batch ends)."""
        client = self.client
        prompt = estimate_prompt_tokens(params["messages"]) + client.image_tokens(sizes)
        tokens = prompt + n * (params.get("max_tokens") or client._longest_answer)
        usd = cost(client.price, prompt, tokens - prompt)
        share = client.session.share
        if share is None:
            verdict = client.session.accounting.reserve(usd, tokens)
        else:  # no per-minute limits for a batch: only the budget
            verdict, _ = await share.admit(client.limit_key, None, None, usd, tokens)
        if verdict is None:
            self.reserved[custom_id] = (usd, tokens)
            return True
        self.state.budget = verdict if verdict != "wait" else (
            f"{client.session.accounting.budget} (with the batched requests' estimated spend "
            "reserved)")
        self.state.unsent += n
        return False

    async def _create(self, chunk: list[tuple[dict, list[str], list[int]]]) -> str:
        client = self.client
        meta = {"vlitc_generator": client.name, "vlitc_step": self.state.step[:500]}
        batch = await self._call(lambda: client.provider().submit_batch([c[0] for c in chunk], meta))
        self.book.record({
            "id": batch.id, "generator": client.name, "provider": client.provider_name,
            "model": client.model, "step": self.state.step, "created": time.time(),
            "items": {line["custom_id"]: keys for line, keys, _ in chunk},
            # the images each line carries and their tokens, counted when it is answered
            "images": {line["custom_id"]: imgs for line, _, imgs in chunk if imgs},
        })
        client.session.accounting.add(self.state.step, client.name, batches=1)
        self.progress[batch.id] = batch
        return batch.id

    async def _call(self, call: Callable[[], Any]) -> Any:
        client = self.client
        return await with_retries(
            call, max_retries=int(self.config["max_retries"]),
            base=float(self.config["retry_backoff"]),
            on_retry=lambda exc: client.session.accounting.add(
                self.state.step, client.name, retries=1))

    # waiting --------------------------------------------------------------------------------
    async def _wait(self, ids: set[str]) -> None:
        poll = float(self.config["batch_poll"])
        limit = self.config.get("batch_wait")
        started = time.monotonic()
        pending, provider = set(ids), self.client.provider()
        while pending:
            for bid in sorted(pending):
                try:
                    st = await self._call(functools.partial(provider.batch_state, bid))
                except ProviderError as exc:
                    if exc.retryable:
                        raise
                    self.book.forget(bid)  # the provider does not know it (another account,
                    pending.discard(bid)  # endpoint or an old id): its requests are sent again
                    self.progress.pop(bid, None)
                    continue
                self.progress[bid] = st
                if st.ended:
                    await self._collect(bid, st)
                    pending.discard(bid)
            self._show()
            if not pending:
                return
            if limit is not None and time.monotonic() - started >= float(limit):
                open_ = ", ".join(sorted(pending))
                self.state.fatal = GenerationError(
                    f"generator {self.client.label} in step {self.state.step or '?'}: batch(es) "
                    f"{open_} still running after batch_wait {limit} s; they are recorded in "
                    "the cache: build again later to collect them (nothing is sent again)")
                return
            await asyncio.sleep(poll)

    def _show(self) -> None:
        states = list(self.progress.values())
        self.state.batch = {
            "batches": len(states),
            "open": sum(not s.ended for s in states),
            "done": sum(s.done for s in states),
            "total": sum(s.total for s in states),
            "status": sorted({s.status for s in states}),
        }
        self.client._progress(self.state, force=True)

    async def _collect(self, bid: str, st: BatchState) -> None:
        """Store an ended batch's answers, note its failures, and forget it."""
        rec = self.book.get(bid)
        if rec is None:
            return
        provider = self.client.provider()
        items: list[BatchItem] = []
        if st.error is None:
            items = await self._call(functools.partial(provider.batch_results, bid))
        seen = set()
        for item in items:
            keys = rec["items"].get(item.custom_id)
            if keys is None or item.custom_id in seen:
                continue
            seen.add(item.custom_id)
            if item.completion is not None:
                usd = self._store(keys, item, (rec.get("images") or {}).get(item.custom_id))
                use = item.completion.usage
                self._settle(item.custom_id, usd, int(use.get("prompt_tokens", 0))
                             + int(use.get("completion_tokens", 0)))
            else:
                assert item.error is not None
                self._settle(item.custom_id)
                self._failed(keys, item.error)
        why = st.error or f"no result in the ended batch {bid} ({st.status})"
        for custom_id, keys in rec["items"].items():
            if custom_id not in seen:
                self._settle(custom_id)
                self._failed(keys, ProviderError(why, status=400 if st.error else None,
                                                 kind="status" if st.error else "expired"))
        self.book.forget(bid)
        self._fill()

    def _settle(self, custom_id: str, usd: float = 0.0, tokens: int = 0) -> None:
        """Give back a line's reservation; ``usd`` and ``tokens``: what it really spent."""
        if custom_id in self.reserved:
            usd_est, tokens_est = self.reserved.pop(custom_id)
            self.client._settle(usd_est, tokens_est, usd, tokens, answered=False)

    def _store(self, keys: list[str], item: BatchItem, images: Any = None) -> float:
        """Commit one answered line's samples; returns what it cost."""
        client, comp = self.client, item.completion
        assert comp is not None
        if isinstance(images, list) and len(images) == 2 and all(isinstance(v, int) for v in images):
            client.session.accounting.add(self.state.step, client.name, images=images[0],
                                          image_tokens=images[1])
        got = list(zip(keys, comp.texts, comp.finish_reasons, strict=False))
        if got and all(client.session.cache.get(k) is not None for k, _, _ in got):
            # stored already (by a build killed before it forgot the batch, or a peer): paid
            # and counted there, so neither stored nor counted again
            self.state.done += len(got)
            return 0.0
        entries = client.entries([t for _, t, _ in got], [r for _, _, r in got], comp.usage)
        for (key, _, _), entry in zip(got, entries, strict=True):
            client.session.cache.set(key, entry)
            client.session._answered.add(key)
        usd = client.account(self.state.step, comp.usage, len(got), batched=1)
        self.state.done += len(got)
        return usd

    def _failed(self, keys: list[str], exc: ProviderError) -> None:
        """A failed line: sent again next round when retryable, else failed for good (a
        non-retryable status stops the step, as in the streaming path)."""
        if exc.kind in ("expired", "canceled", "batch") or not exc.retryable:
            for k in keys:
                self.final[k] = str(exc)
            self.client.session.accounting.add(self.state.step, self.client.name,
                                               failed=len(keys))
            if exc.status is not None and not exc.retryable:
                self.state.fatal = GenerationError(
                    f"generator {self.client.label} in step {self.state.step or '?'}: {exc} "
                    "(not retryable: check the model name, key and request)")
        else:
            for k in keys:
                self.last[k] = str(exc)


def open_batches(cache_dir: Path) -> list[dict]:
    """The batches recorded as open in a response store (for tests and tools)."""
    book = BatchBook(Path(cache_dir))
    try:
        return [r for r in (book.get(b) for b in book.open_ids()) if r is not None]
    finally:
        book.close()

