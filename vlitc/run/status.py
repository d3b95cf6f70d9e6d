"""A step's status, computed one way for ``vlitc plan`` and ``vlitc build``.

:func:`step_status` is the only place that turns a step, its upstream output hashes and the
cache into a key, a status (``cached``, ``stale`` or ``new``) and the reasons. The executor calls
it before it runs each step (every upstream hash is known then); :func:`plan_statuses` walks the
plan without running anything, so a step whose upstream is not cached is stale with
``upstream_stale`` reasons and has no key yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlitc.ops.base import OpContext
from vlitc.plan import Plan, Step
from vlitc.recipe import Recipe
from vlitc.run import keys
from vlitc.run.fingerprint import FileState
from vlitc.run.store import Store


@dataclass
class StepStatus:
    id: str
    status: str  # cached | stale | new
    reasons: list[str]
    key: str | None = None
    comp: dict | None = None  # the key's components (None while an upstream step is stale)
    entry: dict | None = field(default=None, repr=False)  # the cache entry of a cached step
    prev: dict | None = field(default=None, repr=False)  # the components of the last build

    def row(self) -> dict:
        """The row ``vlitc plan --json`` prints."""
        out: dict = {"id": self.id, "status": self.status, "reasons": self.reasons, "key": self.key}
        if self.entry is not None:
            out["n_out"] = self.entry["outputs"]["main"]["count"]
        return out


def output_hash(entry: dict) -> str:
    """What a downstream step's key records of this step's outputs."""
    outs = entry["outputs"]
    return "+".join(outs[k]["hash"] for k in sorted(outs))


def step_status(step: Step, recipe: Recipe, store: Store, files: FileState, ctx: OpContext,
                upstream: dict[str, str | None], *, steps_digest: str | None = None,
                extra_items: int = 0, forced: bool = False) -> StepStatus:
    """The status of ``step`` given its deps' output hashes (None: not built yet).

    ``steps_digest`` is the digest of the step summaries a report reads (known only during a
    build; the plan assumes the last build's). ``extra_items`` is a balance top-up's extra
    records for a task; ``forced`` makes a cached step stale with reason ``forced``."""
    prev = store.get_state(recipe.name, step.id)
    pending = [d for d in step.deps if upstream.get(d) is None]
    if pending:
        why = ["new"] if prev is None else [f"upstream_stale: {d}" for d in pending]
        return StepStatus(step.id, "new" if prev is None else "stale", why, prev=prev)
    up: dict[str, str] = {d: h for d in step.deps if (h := upstream.get(d)) is not None}
    if step.kind == "report":
        up["steps"] = steps_digest if steps_digest is not None else \
            (prev or {}).get("upstream", {}).get("steps", "")
    comp = keys.components(step, recipe, keys.step_files(step, recipe, files, ctx), up)
    if extra_items:
        comp["params"] = {**comp["params"], "topup_items": extra_items}
    key = keys.key_of(comp)
    stale = "new" if prev is None else "stale"
    if forced:
        return StepStatus(step.id, stale, ["forced"], key, comp, prev=prev)
    entry = store.get_entry(key)
    if entry is not None and entry.get("incomplete"):
        return StepStatus(step.id, stale, [f"incomplete: {entry['incomplete']} failed item(s) to retry"],
                          key, comp, prev=prev)
    if entry is not None:
        return StepStatus(step.id, "cached", [], key, comp, entry, prev)
    return StepStatus(step.id, stale, keys.reasons(prev, comp), key, comp, prev=prev)


def plan_statuses(recipe: Recipe, plan: Plan, store: Store, files: FileState) -> list[StepStatus]:
    """Every step's status in plan order, without running anything."""
    hashes: dict[str, str | None] = {}
    out = []
    ctx = OpContext(seed=recipe.seed, recipe_dir=recipe.dir, recipe=recipe.data)
    for sid in plan.order:
        st = step_status(plan.steps[sid], recipe, store, files, ctx, hashes)
        hashes[sid] = output_hash(st.entry) if st.entry is not None else None
        out.append(st)
    return out
