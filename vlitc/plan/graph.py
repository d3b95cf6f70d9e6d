"""From a recipe to a DAG of steps.

    source:<name> ──> task:<name> ──> merge ──> measure:<f1> ──> filter:<f1> ──> ... ──> balance
    pool:<name>   ──┘                                                                  │
                                                      export:<i> <──────────────────────┤
                                                      report     <── balance, filters ──┘

Each step knows its op, the step ids it reads, and the params and files that go into its key.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any

from vlitc.ops import registry
from vlitc.ops.base import NEVER_IN_KEY, Filter, Op
from vlitc.recipe import Recipe


@dataclass
class Step:
    """One node of the plan."""

    id: str
    kind: str  # source, pool, task, merge, measure, filter, balance, export, report
    op: Op | None
    deps: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # what enters the key
    path: tuple = ()  # key path of the op's entry in the recipe

    @property
    def op_name(self) -> str:
        return f"{self.op.family}.{self.op.name}" if self.op else self.kind

    @property
    def version(self) -> int:
        return self.op.version if self.op else 1


@dataclass
class Plan:
    steps: dict[str, Step]
    order: list[str]

    def downstream(self, step_id: str) -> set[str]:
        out, todo = set(), [step_id]
        while todo:
            cur = todo.pop()
            for s in self.steps.values():
                if cur in s.deps and s.id not in out:
                    out.add(s.id)
                    todo.append(s.id)
        return out


def strip_never_in_key(obj: Any) -> Any:
    """Recursively drop keys that never affect results (descriptions, worker counts)."""
    if isinstance(obj, dict):
        return {k: strip_never_in_key(v) for k, v in obj.items() if k not in NEVER_IN_KEY}
    if isinstance(obj, list):
        return [strip_never_in_key(v) for v in obj]
    return obj


def _generator_params(recipe: Recipe, op: Op) -> dict:
    """Generator configs an op refers to belong in its key (minus secrets' names and limits)."""
    out = {}
    for name in op.references().get("generator", []):
        gen = recipe.ops.get(("generators", name))
        if gen is not None:
            out[name] = {"provider": gen.name, **gen.key_params()}
    return out


def _add(steps: dict[str, Step], step: Step) -> None:
    steps[step.id] = step


def build_plan(recipe: Recipe) -> Plan:
    steps: dict[str, Step] = {}
    for path, op in recipe.ops_in("sources"):
        deps = [f"source:{n}" for n in op.references().get("source", [])]
        _add(steps, Step(f"source:{path[1]}", "source", op, deps, op.key_params(), path))
    for path, op in recipe.ops_in("pools"):
        deps = [f"pool:{n}" for n in op.references().get("pool", [])]
        params = {**op.key_params(), "generators": _generator_params(recipe, op)}
        _add(steps, Step(f"pool:{path[1]}", "pool", op, deps, params, path))
    released = []
    for path, op in recipe.ops_in("tasks"):
        refs = op.references()
        deps = [f"{kind}:{n}" for kind in ("source", "pool", "task") for n in refs.get(kind, [])]
        params = {k: val for k, val in op.key_params().items() if k != "include"}
        params["generators"] = _generator_params(recipe, op)
        _add(steps, Step(f"task:{path[1]}", "task", op, deps, params, path))
        if op.params.get("include", True):
            released.append(f"task:{path[1]}")
    _add(steps, Step("merge", "merge", None, released, {}))
    last = "merge"
    for path, op in recipe.ops_in("filters"):
        assert isinstance(op, Filter)
        label = op.label
        mparams = {**op.measure_params(), "generators": _generator_params(recipe, op)}
        _add(steps, Step(f"measure:{label}", "measure", op, [last], mparams, path))
        keep = {k: op.params[k] for k in op.keep_params if k in op.params}
        _add(steps, Step(f"filter:{label}", "filter", op, [f"measure:{label}"], keep, path))
        last = f"filter:{label}"
    bal = recipe.ops.get(("balance",))
    if bal is not None:
        _add(steps, Step("balance", "balance", bal, [last], bal.key_params(), ("balance",)))
        last = "balance"
    final = last
    for path, op in recipe.ops_in("outputs"):
        _add(steps, Step(f"export:{path[1]}", "export", op, [final], op.key_params(), path))
    rep = recipe.ops.get(("report",))
    if rep is None and recipe.data.get("report") is not False and "release" in registry.names("report"):
        rep = registry.get("report", "release")({}, label="release")
    if rep is not None:
        filters = [s.id for s in steps.values() if s.kind == "filter"]
        # where a build runs (``execution``) is no part of what it makes
        data = {k: v for k, v in recipe.data.items() if k != "execution"}
        params = {**rep.key_params(), "recipe": strip_never_in_key(data)}
        _add(steps, Step("report", "report", rep, [final, *filters], params, ("report",)))
    order = list(graphlib.TopologicalSorter({s.id: set(s.deps) for s in steps.values()}).static_order())
    return Plan(steps, order)
