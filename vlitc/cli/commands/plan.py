"""``vlitc plan RECIPE``: every step as cached, stale or new, with the reasons and cost estimates,
and, for a step that would run on cached inputs, how many of its items are new, changed or
cached."""

from __future__ import annotations

import argparse
import json

from vlitc.cli.common import console, recipe_parser


def add_parser(sub) -> None:
    p = recipe_parser(sub, "plan", "show every step as cached, stale or new, with the reasons", run)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _estimates(recipe, plan, rows) -> dict:
    from vlitc import estimates

    try:
        return estimates(recipe, plan, rows)
    except ImportError:  # the generator layer is optional for planning
        return {}


def run(args: argparse.Namespace) -> int:
    from vlitc import plan_status

    recipe, plan, rows = plan_status(args.recipe, args.cache_dir)
    est = _estimates(recipe, plan, rows)
    sums = est.pop("totals", None)
    if args.json:
        for r in rows:
            if r["id"] in est:
                r["estimate"] = est[r["id"]]
        print(json.dumps({"steps": rows, "totals": sums}, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"plan: {args.recipe}")
    for col in ("step", "status", "items", "reasons"):
        table.add_column(col)
    colours = {"cached": "green", "stale": "yellow", "new": "cyan"}
    for r in rows:
        why = ", ".join(r["reasons"])
        if r["id"] in est:
            e = est[r["id"]]
            per = " per input" if e.get("per_item") else ""
            tokens = e.get("prompt_tokens", 0) + e.get("completion_tokens", 0)
            imgs = f", {e['images']} images" if e.get("images") else ""
            note = f"; {e['note']}" if e.get("note") else ""
            note += "; batch price" if e.get("batch") else ""
            cached = (f" ({e['cache_read_tokens']} prompt tokens from the prompt cache, saving "
                      f"${e.get('usd_saved', 0):.4f})" if e.get("cache_read_tokens") else "")
            why += (f" [est. {e.get('calls', 0)} calls{imgs}, {tokens} tokens{cached}, "
                    f"${e.get('usd', 0):.4f}{per}{note}]")
        table.add_row(r["id"], f"[{colours[r['status']]}]{r['status']}[/]", _items(r),
                      escape(why))
    console().print(table)
    if sums:
        console().print(_totals_table(sums))
    return 0


def _items(row: dict) -> str:
    """A step's items that are new, changed or cached, where they are known before it runs."""
    got = row.get("items")
    if not got:
        return f"not counted: {row['items_unknown']}" if row.get("items_unknown") else ""
    return f"{got['new']} new, {got['changed']} changed, {got['cached']} cached"


def _totals_table(sums: dict):
    """Calls, tokens and dollars per generator and for the whole build."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="estimated LLM spend of the steps that would run")
    for col in ("generator", "calls", "prompt tokens", "completion tokens", "images", "USD"):
        table.add_column(col, justify="left" if col == "generator" else "right")
    rows = [*sorted(sums["generators"].items()), ("whole build", sums["build"])]
    for name, t in rows:
        usd = f"${t['usd']:.4f}"
        if t["per_item"]:
            usd += f" + {len(t['per_item'])} step(s) per input"
        prompt = str(t["prompt_tokens"])
        if t.get("cache_read_tokens"):
            prompt += f" ({t['cache_read_tokens']} cached)"
            usd += f" (caching saves ${t.get('usd_saved', 0):.4f})"
        table.add_row(escape(name), str(t["calls"]), prompt, str(t["completion_tokens"]),
                      str(t["images"]), escape(usd))
    return table
