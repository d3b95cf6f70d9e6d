"""Draw a plan as Mermaid or Graphviz dot."""

from __future__ import annotations

from vlitc.plan.graph import Plan


def _node_id(step_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in step_id)


def draw(plan: Plan, fmt: str = "mermaid", status: dict[str, str] | None = None) -> str:
    status = status or {}
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for sid in plan.order:
            label = sid + (f" ({status[sid]})" if sid in status else "")
            lines.append(f'    {_node_id(sid)}["{label}"]')
        for sid in plan.order:
            for dep in plan.steps[sid].deps:
                lines.append(f"    {_node_id(dep)} --> {_node_id(sid)}")
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = ["digraph vlitc {", "    rankdir=LR;", "    node [shape=box];"]
        for sid in plan.order:
            label = sid + (f"\\n{status[sid]}" if sid in status else "")
            lines.append(f'    "{sid}" [label="{label}"];')
        for sid in plan.order:
            for dep in plan.steps[sid].deps:
                lines.append(f'    "{dep}" -> "{sid}";')
        lines.append("}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown graph format {fmt!r}")
