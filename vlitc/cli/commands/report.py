"""``vlitc report PATH``: the quality indicators of a release folder or an exported file."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_ = "print the quality indicators of a release (or compute them for an exported file)"
    p = subparsers.add_parser("report", help=help_, description=help_)
    p.add_argument("path", help="a release folder, or a LLaVA JSON / JSONL / Parquet file")
    p.add_argument("--recompute", action="store_true",
                   help="compute from the exported samples even when indicators.json exists")
    p.add_argument("--no-response", action="store_true",
                   help="skip response diversity (it loads the all-MiniLM-L6-v2 model)")
    p.add_argument("--eps", type=float, default=0.2, help="DBSCAN cosine distance (default 0.2)")
    p.add_argument("--min-samples", type=int, default=3, help="DBSCAN min_samples (default 3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vlitc import report
    from vlitc.release.summary import indicator_rows

    ind = report(args.path, recompute=args.recompute, response=not args.no_response, eps=args.eps,
                 min_samples=args.min_samples)
    if args.json:
        print(json.dumps(ind, indent=2, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quality indicators: {args.path}")
    table.add_column("indicator")
    table.add_column("value", justify="right")
    for name, value in indicator_rows(ind):
        table.add_row(name, value)
    Console(highlight=False).print(table)
    return 0
