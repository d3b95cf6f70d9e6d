"""``vlitc schema``: the recipe JSON Schema (``schemas/recipe.schema.json``)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    sub.add_parser("schema", help="print the recipe JSON Schema").set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlitc import schema

    print(json.dumps(schema(), indent=2))
    return 0
