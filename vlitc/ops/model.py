"""One base for every op that calls a model: the ``generate`` and ``rewrite`` tasks, the ``judge``
and ``complexity`` filters and ``expand`` pools.

An op says how to build the request of one item; :meth:`ModelOp.answers` does the rest the same
way for all of them: it streams the items through the generator's client (a bounded window of
requests in flight, answers in input order), honours the generator's ``on_error``, and records
every request that finally failed:

* ``on_error: fail`` (the default) stops the step at the first such failure with a
  :class:`~vlitc.errors.GenerationError` naming the item, after the requests in flight finish
  (their answers are stored, nothing is paid twice);
* ``on_error: skip`` goes on without the item: it is counted (``llm_failed``) and listed
  (``notes.llm_failed``: item and error), the executor marks the step incomplete, so the next
  build retries exactly those items, and the build summary, manifest and card name them.

A failure is never a result: a filter's stats for a failed item carry ``failed: true``
(:func:`failed_stats`), which the executor's per-item cache never stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from vlitc.errors import GenerationError
from vlitc.llm.cost import CACHE_USAGE
from vlitc.ops.base import Filter, Measuring, OpContext

T = TypeVar("T")

#: the counter and note of failed model calls (the executor marks a step with any incomplete)
FAILED = "llm_failed"
#: failed items listed per step (the count is exact; the list stops here)
MAX_LISTED = 100


def failed_stats(error: str) -> dict:
    """A filter's stats for an item whose model call failed: never cached as a measurement."""
    return {"error": error, "failed": True}


def is_failed(stats: Any) -> bool:
    return isinstance(stats, dict) and stats.get("failed") is True


class ModelOp:
    """Mixin of the ops that call the generator named by ``params[generator_param]``."""

    generator_param: ClassVar[str] = "generator"
    params: dict
    label: str

    @property
    def generator(self) -> str:
        return self.params[self.generator_param]

    def on_error(self, ctx: OpContext) -> str:
        return ctx.generators.get(self.generator, {}).get("on_error", "fail")

    def batched(self, ctx: OpContext) -> bool:
        """Whether its generator sends through a batch API (``batch: true``): the step then
        stays in one piece, one batch for all its requests rather than one per chunk."""
        return bool(ctx.generators.get(self.generator, {}).get("batch"))

    def planned_requests(self, inputs: Iterable[dict], ctx: OpContext) -> Iterator[tuple[str, Any]]:
        """``(item, request)`` for each item of ``inputs`` (a task's source records, a filter's
        samples in scope) that the op would ask the model about, built as its run builds them
        and never sent: ``vlitc plan`` looks their keys up in the response cache. ``request``
        may be ``None`` (nothing to ask)."""
        raise NotImplementedError

    def item_of(self, out: dict) -> str:
        """The item (as :meth:`planned_requests` names it) an output sample of the op came from."""
        return str(out.get("id"))

    def answers(
        self,
        ctx: OpContext,
        items: Iterable[T],
        request: Callable[[T], Any],
        item_id: Callable[[T], str],
        count_usage: bool = False,
    ) -> Iterator[tuple[T, Any]]:
        """``(item, response)`` for each item in order; ``request(item)`` builds its
        :class:`vlitc.llm.Request`, or ``None`` to pass the item through (``response`` None).

        A response with ``error`` has already been handled by ``on_error``: under ``fail`` it
        raised; under ``skip`` it was recorded, and the op leaves the item out (or keeps it
        unchanged) as its docs say. With ``count_usage`` the answered requests are counted with
        their recorded tokens (``llm_requests``, ``prompt_tokens``, ``completion_tokens`` and the
        prompt-cache ``cache_read_tokens`` / ``cache_write_tokens``: the same
        whether an answer came fresh or from the cache, so the report of a rebuild matches)."""
        client = ctx.client(self.generator)
        fail = self.on_error(ctx) == "fail"
        for item, resp in client.stream(items, request, step=ctx.step_id):
            if resp is not None and resp.error:
                ident = item_id(item)
                if fail:
                    raise GenerationError(
                        f"{self.label}: {resp.error} (item {ident}; set on_error: skip to go "
                        "on without it; the answers received so far are cached)"
                    )
                record_failure(ctx, ident, resp.error)
            elif resp is not None and count_usage:
                add_usage(ctx, usage_of(resp))
            yield item, resp


def usage_of(resp: Any) -> dict:
    """What one answered request cost, as recorded with its responses (fresh or cached alike):
    tokens, and the prompt tokens a provider's prompt cache read or wrote."""
    out = {"requests": 1, "prompt_tokens": int(resp.usage.get("prompt_tokens", 0)),
           "completion_tokens": int(resp.usage.get("completion_tokens", 0))}
    out.update({k: int(resp.usage[k]) for k in CACHE_USAGE if resp.usage.get(k)})
    return out


def add_usage(ctx: OpContext, usage: dict) -> None:
    """Count a request's usage on the step (``llm_requests``, ``prompt_tokens``,
    ``completion_tokens``, the prompt-cache tokens: the report's LLM section)."""
    ctx.count("llm_requests", int(usage.get("requests", 1)))
    ctx.count("prompt_tokens", int(usage.get("prompt_tokens", 0)))
    ctx.count("completion_tokens", int(usage.get("completion_tokens", 0)))
    for k in CACHE_USAGE:
        if usage.get(k):
            ctx.count(k, int(usage[k]))


def record_failure(ctx: OpContext, item: str, error: str) -> None:
    """Count and list one item whose model call finally failed (under ``on_error: skip``)."""
    ctx.count(FAILED)
    listed = ctx.notes.setdefault(FAILED, [])
    if len(listed) < MAX_LISTED:
        listed.append({"item": item, "error": error})


#: the stat of a model filter that holds what its request cost (so that stats served from the
#: per-item cache count in the step's usage as if read again: a rebuild reports the same)
USAGE = "usage"


class ModelFilter(ModelOp, Filter):
    """A filter whose measurement is one model request per sample: subclasses give
    :meth:`request` and :meth:`stats`; a failed request gives :func:`failed_stats`. Each
    sample's stats carry ``usage`` (requests, tokens), counted on the step whether measured
    now or served by the per-item cache."""

    def request(self, s: dict, ctx: OpContext | None = None) -> Any:
        raise NotImplementedError

    def planned_requests(self, inputs: Iterable[dict], ctx: OpContext) -> Iterator[tuple[str, Any]]:
        return ((str(s.get("id")), self.request(s, ctx)) for s in inputs)

    def stats(self, s: dict, texts: list[str], ctx: OpContext) -> dict:
        """The stats of one sample from its answers."""
        raise NotImplementedError

    def measure(self, samples: list[dict], ctx: OpContext) -> list[dict]:
        items = [Measuring(s) for s in samples]
        return [m.stats for m in self.measure_stream(items, ctx) if m.stats is not None]

    def measure_stream(self, items: Iterable[Measuring], ctx: OpContext) -> Iterator[Measuring]:
        def request(m: Measuring) -> Any:
            return self.request(m.sample, ctx) if m.todo else None

        for m, resp in self.answers(ctx, items, request, lambda m: str(m.sample.get("id")),
                                    count_usage=True):
            if resp is not None:
                m.stats = failed_stats(resp.error) if resp.error else \
                    {**self.stats(m.sample, resp.texts, ctx), USAGE: usage_of(resp)}
            elif isinstance(m.stats, dict) and isinstance(m.stats.get(USAGE), dict):
                add_usage(ctx, m.stats[USAGE])  # served by the per-item cache
            yield m
