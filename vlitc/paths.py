"""Paths written in a recipe: the one rule for resolving them."""

from __future__ import annotations

from pathlib import Path


def recipe_path(recipe_dir: Path, value: str | Path) -> Path:
    """A path as a recipe writes it: ``~`` expanded; a relative one resolves against the
    recipe's folder (never the working directory)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else recipe_dir / p
