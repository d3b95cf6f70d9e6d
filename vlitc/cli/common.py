"""What the commands share: the console and the arguments of a command that reads a recipe."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def recipe_parser(sub, name: str, help_: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A subcommand that reads a recipe: ``vlitc NAME RECIPE [--cache-dir DIR]``."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--cache-dir", default=None, help="cache folder (default .vlitc or $VLITC_CACHE_DIR)")
    p.set_defaults(func=run)
    return p
