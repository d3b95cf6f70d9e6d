"""LLM steps fanned out over the build's engine: each worker (a local pool process or a Ray task)
renders its chunk's requests, sends them through an LLM session of its own and parses the
answers, while every sender of the build shares

* one :class:`vlitc.llm.limits.Governor` (the per-minute limits of each provider and model, and
  the budget with the calls in flight reserved): served by a multiprocessing manager on the local
  engine, by one Ray actor on Ray; the build's own session uses it too from then on;
* one response store (the cache folder), whose leases make one sender per request across
  processes (:mod:`vlitc.llm.cache`), so nothing is sent twice;
* ``max_concurrency``, divided between the workers that run at the same time.

A worker's session lives for one chunk; what it counted (calls, tokens, spend per step and
generator), the responses it used and its warnings come back with the chunk and are added to the
build's session (:func:`merge`), so the manifest, the report and ``llm_responses.jsonl`` are
those of a build in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlitc.llm.limits import Governor

if TYPE_CHECKING:
    from vlitc.llm.session import LLMSession


class GovernorManager(BaseManager):
    """Serves one :class:`Governor` to the processes of a local pool."""


GovernorManager.register("Governor", Governor)


@dataclass
class Share:
    """A handle on the build's governor that pickles into workers: a manager proxy (local) or a
    Ray actor handle."""

    governor: Any
    ray: bool = False

    async def admit(self, key: str, rpm: float | None, tpm: float | None, usd: float,
                    tokens: int) -> tuple[str | None, float]:
        if self.ray:
            verdict, delay = await self.governor.admit.remote(key, rpm, tpm, usd, tokens)
            return verdict, delay
        return self.governor.admit(key, rpm, tpm, usd, tokens)  # one round trip on a local socket

    def settle(self, key: str, usd_est: float, tokens_est: int, usd: float, tokens: int,
               answered: bool) -> None:
        if self.ray:  # actor calls from one caller run in order: no need to wait for it
            self.governor.settle.remote(key, usd_est, tokens_est, usd, tokens, answered)
        else:
            self.governor.settle(key, usd_est, tokens_est, usd, tokens, answered)

    def state(self) -> dict:
        if self.ray:
            import ray

            return ray.get(self.governor.state.remote())
        return self.governor.state()


def serve(engine: Any, session: LLMSession) -> tuple[Share, Callable[[], None]]:
    """Start the governor for a build on ``engine``, seeded with what ``session`` spent so far,
    and make ``session`` use it; returns the share and what stops it."""
    total = session.accounting.total
    args = (session.accounting.budget, total.usd, total.prompt_tokens + total.completion_tokens)
    if engine.name == "ray":
        ray = engine.ray()
        actor = ray.remote(num_cpus=0)(Governor).remote(*args)
        share = Share(actor, ray=True)

        def stop() -> None:
            ray.kill(actor)
    else:
        manager = GovernorManager(ctx=engine.mp_context())
        manager.start()
        share = Share(manager.Governor(*args))  # type: ignore[attr-defined]

        def stop() -> None:
            manager.shutdown()
    session.share = share
    return share, stop


@dataclass
class LLMJob:
    """What a worker needs to open the LLM session of a chunk (plain data and the share)."""

    share: Share
    generators: dict[str, dict]
    budget: dict
    cache_dir: str
    workers: int  # senders at the same time: each takes its part of max_concurrency
    frozen: bool = False
    store: str | None = None

    def open(self) -> LLMSession:
        from vlitc.llm.defaults import DEFAULTS
        from vlitc.llm.session import LLMSession

        gens = {}
        for name, cfg in self.generators.items():
            conc = int(cfg.get("max_concurrency") or DEFAULTS["max_concurrency"])
            gens[name] = {**cfg, "max_concurrency": max(1, conc // self.workers)}
        s = LLMSession({"generators": gens, "budget": self.budget}, Path(self.cache_dir),
                       frozen=self.frozen, store=Path(self.store) if self.store else None)
        s.share = self.share
        return s


def report(session: LLMSession) -> dict:
    """What a worker's session counted and used, as plain data for :func:`merge`."""
    return {"accounting": session.accounting.tallies(), "used": sorted(session.used),
            "warnings": list(session.cache.warnings),
            "images": [session.images.prepared_count, session.images.prepare_seconds]}


def merge(session: LLMSession, got: dict) -> None:
    """Add a worker's :func:`report` to the build's session."""
    session.accounting.merge(got["accounting"])
    session.used.update(got["used"])
    session.cache.warnings.extend(w for w in got["warnings"] if w not in session.cache.warnings)
    session.images.prepared_count += got["images"][0]
    session.images.prepare_seconds += got["images"][1]
