"""``vlitc validate RECIPE``: check a recipe before anything is built."""

from __future__ import annotations

import argparse

from vlitc.cli.common import recipe_parser


def add_parser(sub) -> None:
    recipe_parser(sub, "validate", "check a recipe against the schema, its references and files", run)


def run(args: argparse.Namespace) -> int:
    from vlitc import build_plan, validate

    recipe = validate(args.recipe)
    print(f"{args.recipe}: ok ({recipe.name} {recipe.version}, {len(build_plan(recipe).order)} steps)")
    return 0
