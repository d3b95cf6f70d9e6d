"""``vlitc graph RECIPE``: the step graph as Mermaid or Graphviz dot."""

from __future__ import annotations

import argparse
import sys

from vlitc.cli.common import recipe_parser


def add_parser(sub) -> None:
    p = recipe_parser(sub, "graph", "draw the step graph", run)
    p.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")


def run(args: argparse.Namespace) -> int:
    from vlitc import graph

    sys.stdout.write(graph(args.recipe, args.format, args.cache_dir))
    return 0
