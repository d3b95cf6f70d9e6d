"""``vlitc lint [RECIPE|FILES...]``: check instruction pools and prompt files for defects."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    help_ = "check pools and prompt files: duplicates, run-together templates, variables, empties"
    p = subparsers.add_parser("lint", help=help_, description=help_)
    p.add_argument("paths", nargs="*", metavar="RECIPE|FILE",
                   help="recipes, pool files or folders (default: the shipped default pools)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print ``file:line: message`` per finding; exit 2 when there is any, 0 when clean."""
    from vlitc.errors import InputError, Location
    from vlitc.lint import lint_paths
    from vlitc.ops.pools import builtin_pool_path

    paths = [Path(p) for p in args.paths]
    if not paths:
        paths = [builtin_pool_path("brief_caption").parent]
    for p in paths:
        if not p.exists():
            raise InputError("no such file or folder", Location(str(p)))
    findings = lint_paths(paths)
    for f in findings:
        print(f)
    if findings:
        print(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}")
        return 2
    return 0
