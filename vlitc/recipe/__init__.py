"""What did the user write: load (keeping line and column), schema, validation."""

from vlitc.recipe.recipe import Recipe, load_recipe
from vlitc.recipe.schema import build_schema

__all__ = ["Recipe", "build_schema", "load_recipe"]
