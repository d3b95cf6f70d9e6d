"""``vlitc diff OLD NEW``: compare two releases."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_ = "compare two releases: counts per task and source, indicator shifts, samples added and removed"
    p = subparsers.add_parser("diff", help=help_, description=help_)
    p.add_argument("old", help="the older release folder (or exported file)")
    p.add_argument("new", help="the newer release folder (or exported file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--html", metavar="PATH",
                   help="also write a visual audit page: added, removed and changed samples "
                        "side by side with their images")
    p.add_argument("--exit-code", action="store_true",
                   help="exit with 1 when the releases differ (like git diff --exit-code)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vlitc import diff
    from vlitc.release.diff import format_diff, is_identical

    d = diff(args.old, args.new)
    if args.html:
        from pathlib import Path

        from vlitc.release.diff import diff_page

        Path(args.html).write_text(diff_page(args.old, args.new, d), encoding="utf-8")
    print(json.dumps(d, indent=2, sort_keys=True) if args.json else format_diff(d))
    return 1 if args.exit_code and not is_identical(d) else 0
