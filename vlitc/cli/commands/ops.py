"""``vlitc ops [FAMILY [NAME]] [--markdown]``: the registered ops, from their docstrings and schemas."""

from __future__ import annotations

import argparse

from vlitc.ops import registry


def add_parser(sub) -> None:
    p = sub.add_parser("ops", help="list the ops a recipe can use, with their params",
                       description="list the ops a recipe can use, with their params")
    p.add_argument("family", nargs="?", choices=registry.FAMILIES, help="only this family")
    p.add_argument("name", nargs="?", help="only this op")
    p.add_argument("--markdown", action="store_true", help="write the reference as Markdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlitc import ops_reference

    print(ops_reference(args.family, args.name, markdown=args.markdown), end="")
    return 0
