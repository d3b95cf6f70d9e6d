"""``vlitc lint [RECIPE|FILES...]``: check instruction pools and prompt files for defects."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_ = "check pools and prompt files: duplicates, run-together templates, variables, empties"
    p = subparsers.add_parser("lint", help=help_, description=help_)
    p.add_argument("paths", nargs="*", metavar="RECIPE|FILE",
                   help="recipes, pool files or folders (default: the shipped default pools)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print ``file:line: message`` per finding; exit 2 when there is any, 0 when clean."""
    from vlitc import lint_pools

    findings = lint_pools(args.paths)
    for f in findings:
        print(f)
    if findings:
        print(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}")
        return 2
    return 0
