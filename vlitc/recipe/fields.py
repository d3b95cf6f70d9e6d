"""What each op reads, checked against what its inputs write, before anything is built.

Ops declare ``reads`` and ``writes`` (see :class:`vlitc.ops.base.Op`): record fields for sources
and the tasks that read them (``captions``, ``objects``...), sample fields for tasks, filters and
what follows (``turns``, ``meta.context``...). A read ``"a|b"`` needs one of them; a read ending
in ``?`` is used when present and needs nothing. A task that reads ``captions`` from a source
that never writes them, or a filter that reads ``meta.context`` of a task that never writes it,
would build silently to nothing (or to a filter that cannot tell): it is a located error here.
"""

from __future__ import annotations

from collections.abc import Iterable

from vlitc.errors import Problem
from vlitc.ops.base import Op
from vlitc.recipe.load import KeyPath, Positions
from vlitc.records import SAMPLE_FIELDS

Fields = frozenset[str]


def _needs(read: str) -> tuple[str, ...]:
    """The alternatives of a declared read; empty for an optional one (``"x?"``)."""
    return () if read.endswith("?") else tuple(read.split("|"))


def missing(reads: Iterable[str], have: Fields) -> list[str]:
    """The declared reads that ``have`` satisfies by none of their alternatives."""
    return [r for r in reads if (alts := _needs(r)) and not any(a in have for a in alts)]


class _Graph:
    """The fields each source's records and each task's samples can carry, from the recipe."""

    def __init__(self, ops: dict[KeyPath, Op]):
        self.ops = ops
        self.memo: dict[KeyPath, Fields] = {}

    def fields(self, path: KeyPath) -> Fields:
        if path not in self.memo:
            self.memo[path] = frozenset()  # a cycle (reported elsewhere) reads as nothing
            op = self.ops[path]
            own = frozenset(op.writes) | (SAMPLE_FIELDS if path[0] == "tasks" else frozenset())
            if op.keeps_input_fields:
                own |= frozenset().union(*(self.fields(p) for _, p, _ in self.inputs(op)))
            self.memo[path] = own
        return self.memo[path]

    def inputs(self, op: Op) -> list[tuple[str, KeyPath, str]]:
        """(kind, path, name) of the sources or tasks an op reads."""
        refs = op.references()
        out = [("task", ("tasks", n), n) for n in refs.get("task", [])]
        if not out:
            out = [("source", ("sources", n), n) for n in refs.get("source", [])]
        return [i for i in out if i[1] in self.ops]


def _problem(pos: Positions, path: KeyPath, who: str, lacks: list[str], kind: str, name: str,
             have: Fields, hint: str = "") -> Problem:
    reads = ", ".join(r.replace("|", " or ") for r in lacks)
    writes = ", ".join(sorted(have)) or "nothing"
    return pos.problem(path, f"{who} reads {reads}, which {kind} {name!r} never writes",
                       f"{kind} {name!r} writes: {writes}" + (f"; {hint}" if hint else ""))


def field_problems(ops: dict[KeyPath, Op], pos: Positions) -> list[Problem]:
    """Every declared read that no input of the op can write, located at the op's entry."""
    graph = _Graph(ops)
    out: list[Problem] = []
    for path, op in ops.items():
        if path[0] not in ("sources", "tasks"):
            continue
        who = f"{path[0][:-1]} {path[1]!r} ({op.name})"
        for kind, ipath, name in graph.inputs(op):
            have = graph.fields(ipath)
            if lacks := missing(op.reads, have):
                out.append(_problem(pos, path, who, lacks, kind, name, have))
    released = [p[1] for p, op in ops.items() if p[0] == "tasks" and op.params.get("include") is not False]
    earlier: Fields = frozenset()
    for path, op in ops.items():
        if path[0] != "filters":
            continue
        who = f"filter {op.label!r} ({op.name})"
        for name in op.params.get("tasks") or released:
            if ("tasks", name) not in ops:
                continue  # an unknown task name is reported on its own
            have = graph.fields(("tasks", name)) | earlier
            if lacks := missing(op.reads, have):
                out.append(_problem(pos, path, who, lacks, "task", name, have,
                                    "name the tasks it applies to with 'tasks: [...]'"))
        earlier |= frozenset(op.writes)
    return out
