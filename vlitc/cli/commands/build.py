"""``vlitc build RECIPE``: run what is stale and write the release."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlitc.cli.common import console, recipe_parser


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number or auto")
    return n


def add_parser(sub) -> None:
    sp = recipe_parser(sub, "build", "run what is stale and write the release", run)
    sp.add_argument("--out", default=None, help="output folder (default build/<name>)")
    sp.add_argument("--force", action="append", metavar="STEP", help="re-run STEP (e.g. task:brief, all)")
    sp.add_argument("--json", action="store_true", help="print events as JSON lines")
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.add_argument("--frozen", action="store_true", help="make no LLM call: use stored responses only")
    sp.add_argument("--strict", action="store_true",
                    help="a step that outputs nothing, or a release with no samples, is an error")
    sp.add_argument("--llm-store", default=None, help="response store (llm_responses.jsonl) to read")
    sp.add_argument("--frozen-from", dest="frozen_release", default=None, metavar="RELEASE",
                    help="rebuild RELEASE with no LLM call, from the responses it carries, and "
                         "say exactly what differs (exit 2 if anything does)")
    sp.add_argument("--engine", choices=("local", "ray"), default=None,
                    help="where map steps run (default: the recipe's execution.engine, else local)")
    sp.add_argument("--workers", type=_workers, default=None,
                    help="worker processes (local) or CPUs (ray): a number or auto")
    sp.add_argument("--ray-address", dest="address", default=None, metavar="ADDRESS",
                    help="the Ray cluster to join (auto, host:port, ray://host:port)")


def _up_to_date(args: argparse.Namespace) -> bool:
    """Answer a no-op rebuild before the recipe, schema, template or model layers load."""
    if args.force or args.frozen or args.frozen_release or args.llm_store:
        return False
    from vlitc.run import noop

    cache = Path(args.cache_dir) if args.cache_dir else noop.default_cache_dir()
    done = noop.answer(Path(args.recipe), cache, Path(args.out) if args.out else None)
    if done is None or (args.strict and done.get("warnings")):
        return False  # a strict build with warnings takes the full path, which fails on them
    n = len(done["steps"])
    if not args.quiet and not args.json:
        for w in done.get("warnings") or []:
            print(f"warning: {w}", file=sys.stderr)
    out = Path(args.out) if args.out else Path("build") / done["name"]
    if args.json:
        print(json.dumps({"event": "done", "out_dir": str(out), "ran": 0, "cached": n}))
    elif not args.quiet:
        print(f"built {done['name']} {done['version']} -> {out} (0 ran, {n} cached, "
              f"{done['seconds']:.2f}s, up to date)", file=sys.stderr)
    return True


def run(args: argparse.Namespace) -> int:
    if _up_to_date(args):
        return 0
    from vlitc import build, frozen_rebuild
    from vlitc.ui.progress import JsonReporter, reporter_for

    reporter = JsonReporter() if args.json else (None if args.quiet else reporter_for(console(stderr=True)))
    diffs: list[str] | None = None
    try:
        if args.frozen_release is not None:
            result, diffs = frozen_rebuild(args.recipe, args.frozen_release, out_dir=args.out,
                                           cache_dir=args.cache_dir, emit=reporter)
        else:
            result = build(args.recipe, out_dir=args.out, cache_dir=args.cache_dir,
                           force=args.force or (), emit=reporter, frozen=args.frozen,
                           llm_store=args.llm_store, engine=args.engine, workers=args.workers,
                           address=args.address, strict=args.strict)
    finally:
        if reporter is not None:
            reporter.close()
    if diffs:
        err = console(stderr=True)
        err.print(f"frozen rebuild differs from the release {args.frozen_release}:", markup=False)
        for d in diffs:
            err.print(f"  {d}", markup=False)
        return 2
    m = result.manifest
    ran = sum(1 for s in m["steps"] if s["status"] == "ran")
    failed = [{"step": s["id"], **s["failed"]} for s in m["steps"] if s.get("failed")]
    if args.json:
        print(json.dumps({"event": "done", "out_dir": str(result.out_dir), "ran": ran,
                          "cached": len(m["steps"]) - ran, "failed": failed}))
        return 0
    err = console(stderr=True)
    if not args.quiet:
        err.print(f"[bold green]built[/] {m['name']} {m['version']} -> {result.out_dir} "
                  f"({ran} ran, {len(m['steps']) - ran} cached, {m['seconds']:.2f}s)")
    for f in failed:  # said even with --quiet: these items are not in the release
        items = ", ".join(str(i["item"]) for i in f["items"][:10])
        more = f" and {f['count'] - 10} more" if f["count"] > 10 else ""
        err.print(f"{f['step']}: {f['count']} item(s) left out after failed model calls "
                  f"(on_error: skip): {items}{more}; the next build retries them "
                  "(errors in manifest.json)", style="yellow", markup=False)
    return 0
