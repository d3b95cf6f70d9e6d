"""Item-level status of the steps that would run, for ``vlitc plan``: per step, how many items are
*new* (not in the step's last build), *changed* (in it, but their request or content differs
now) and *cached* (their answers or measurements are in the per-item caches), and what the
others would send. Found without running a step and without sending anything.

It is known for a step whose inputs are all cached:

* a step that calls a model (``generate``, ``rewrite``, ``judge``, ``complexity``): each item's
  request is rendered as the run renders it and its per-sample keys looked up in the LLM
  response cache (:meth:`vlitc.llm.session.Client.lookup`); an item whose every sample is there
  is cached, and the calls and prompt tokens of the rest are counted from their own requests;
* an item-scope measure (``clip``, ``judge``...): each sample's stats are looked up in the
  per-item cache, as the build looks them up (:func:`vlitc.run.measures.cache_key`).

A step with more than :data:`MAX_ITEMS` inputs (rendering and looking up each request costs
about a millisecond per item, as much as the step's own rendering), or whose requests cannot be
rendered without running (a region box drawn on the image), is not counted item by item: the
plan says why (``items_unknown``) and counts it whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlitc.errors import VlitcError
from vlitc.ops.base import Filter, OpContext
from vlitc.ops.model import ModelOp, is_failed
from vlitc.plan import Plan, Step
from vlitc.recipe import Recipe
from vlitc.run.fingerprint import FileState
from vlitc.run.keys import key_of
from vlitc.run.status import StepStatus
from vlitc.run.store import Store

#: inputs beyond which a step's items are not looked at one by one (the plan stays fast)
MAX_ITEMS = 20_000


class _Unknown(Exception):
    """The step's items cannot be told apart without running it."""


@dataclass
class Tally:
    """One step's items and what the uncached ones would send."""

    new: int = 0
    changed: int = 0
    cached: int = 0
    unknown: str = ""  # why the items could not be counted (then nothing else is set)
    #: requests with at least one sample missing: (samples missing, text tokens and image
    #: tokens of one call's prompt, images in one call)
    todo: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add(self, item: str, cached: bool, before: set[str]) -> None:
        if cached:
            self.cached += 1
        elif item in before:
            self.changed += 1
        else:
            self.new += 1

    def counts(self) -> dict:
        return {"new": self.new, "changed": self.changed, "cached": self.cached}


def item_tallies(recipe: Recipe, plan: Plan, store: Store, files: FileState,
                 statuses: list[StepStatus]) -> dict[str, Tally]:
    """The :class:`Tally` of every step that would run and whose items can be known now."""
    entries = {st.id: st.entry for st in statuses if st.entry is not None}
    out: dict[str, Tally] = {}
    looker = _Looker(recipe, store)
    try:
        for st in statuses:
            step = plan.steps[st.id]
            if st.entry is not None or not _itemised(step) or \
                    any(d not in entries for d in step.deps):
                continue
            inputs = sum(entries[d]["outputs"]["main"]["count"] for d in step.deps)
            if inputs > MAX_ITEMS:
                out[st.id] = Tally(unknown=f"{inputs} inputs, more than the {MAX_ITEMS} the plan "
                                           "looks at one by one")
                continue
            try:
                out[st.id] = _tally(step, st, recipe, store, files, entries, looker)
            except (_Unknown, VlitcError, OSError) as e:  # e.g. a box only the run draws
                out[st.id] = Tally(unknown=f"requests known only when the step runs ({e})")
    finally:
        looker.close()
    return out


def _itemised(step: Step) -> bool:
    op = step.op
    if op is None:
        return False
    if step.kind == "task":
        return isinstance(op, ModelOp)
    if step.kind == "measure" and isinstance(op, Filter):
        return op.scope == "item" and (op.cache_items or isinstance(op, ModelOp))
    return False


def _tally(step: Step, st: StepStatus, recipe: Recipe, store: Store, files: FileState,
           entries: dict[str, dict], looker: _Looker) -> Tally:
    ctx = _context(recipe, store, entries, step)
    op = step.op
    before = _previous_items(store, st, op)
    tally = Tally()
    if step.kind == "measure":
        assert isinstance(op, Filter)
        _tally_measure(op, step, recipe, store, files, ctx, entries, looker, before, tally)
        return tally
    assert isinstance(op, ModelOp)
    src = op.params.get("source")
    records = _read(store, entries, f"source:{src}") if isinstance(src, str) else iter(())
    client = looker.client(op.generator)
    for item, req in op.planned_requests(records, ctx):
        tally.add(item, looker.ask(client, req, tally), before)
    return tally


def _tally_measure(op: Filter, step: Step, recipe: Recipe, store: Store, files: FileState,
                   ctx: OpContext, entries: dict[str, dict], looker: _Looker, before: set[str],
                   tally: Tally) -> None:
    from vlitc.run.measures import cache_key, item_fingerprint
    from vlitc.run.shards import in_scope

    cache = fp = None
    if op.cache_items:
        fp = item_fingerprint(op, step, recipe, files, ctx)
        cache = store.item_cache(f"measure-{op.name}")
    client = looker.client(op.generator) if isinstance(op, ModelOp) else None
    for s in _read(store, entries, step.deps[0]):
        if not in_scope(op, s):
            continue
        item = str(s.get("id"))
        if cache is not None and fp is not None:
            hit = cache.get(cache_key(fp, s))
            if hit is not None and not is_failed(hit):
                tally.add(item, True, before)
                continue
        if client is None:
            tally.add(item, False, before)
            continue
        assert isinstance(op, ModelOp)
        [(_, req)] = list(op.planned_requests([s], ctx))
        tally.add(item, looker.ask(client, req, tally), before)


def _read(store: Store, entries: dict[str, dict], ref: str) -> Iterator[dict]:
    if ref not in entries:
        raise _Unknown(ref)
    return store.read(entries[ref]["outputs"]["main"])


def _context(recipe: Recipe, store: Store, entries: dict[str, dict], step: Step) -> OpContext:
    """The context the step's op would run with, reading its cached inputs; it draws nothing
    (no derived-image folder: a request with a drawn box is not known before the run)."""
    base = OpContext(seed=recipe.seed, recipe_dir=recipe.dir, recipe=recipe.data)
    roots = {path[1]: base.resolve(folder) for path, op in recipe.ops_in("sources")
             if (folder := op.image_folder()) is not None}
    gens = {p[1]: {"provider": op.name, **op.params} for p, op in recipe.ops_in("generators")}
    data = {k: v for k, v in recipe.data.items() if k != "execution"}
    return OpContext(seed=recipe.seed, recipe_dir=recipe.dir, step_id=step.id, image_roots=roots,
                     generators=gens, recipe=data, _inputs=lambda ref: _read(store, entries, ref))


def _previous_items(store: Store, st: StepStatus, op: Any) -> set[str]:
    """The items the step's last build made output for (empty when that build is gone)."""
    if st.prev is None:
        return set()
    entry = store.get_entry(key_of(st.prev))
    if entry is None:
        return set()
    item_of = op.item_of if isinstance(op, ModelOp) else (lambda s: str(s.get("id")))
    return {item_of(s) for s in store.read(entry["outputs"]["main"])}


class _Looker:
    """Looks requests up in the LLM response cache through a frozen session (which never
    opens a connection), one client per generator."""

    def __init__(self, recipe: Recipe, store: Store):
        self.recipe, self.root = recipe, Path(store.root) / "llm"
        self._session: Any = None

    def client(self, name: str) -> Any:
        if self._session is None:
            from vlitc.llm import session

            self._session = session(self.recipe.data, self.root, frozen=True)
        return self._session.client(name)

    def ask(self, client: Any, req: Any, tally: Tally) -> bool:
        """Whether every sample of ``req`` is cached; what the missing ones cost goes to
        ``tally``. A ``None`` request asks nothing (cached)."""
        if req is None:
            return True
        missing = client.lookup(req).count(False)
        if missing:
            tally.todo.append((missing, *_prompt_tokens(client, req)))
        return not missing

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _prompt_tokens(client: Any, req: Any) -> tuple[int, int, int]:
    """(text tokens, image tokens, images) of one call of ``req``, as the session estimates
    them before it sends."""
    from vlitc.llm.limits import estimate_prompt_tokens

    sizes = [client.prep.target(*client.session.images.size_of(p["image"]))
             for m in req.messages if isinstance(m["content"], list)
             for p in m["content"] if p.get("type") == "image"]
    return estimate_prompt_tokens(req.messages), client.image_tokens(sizes), len(sizes)
