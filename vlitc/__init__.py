"""vlitc: compile declarative YAML recipes into vision-language instruction-tuning datasets."""

from vlitc.api import (
    build,
    cache_gc,
    diff,
    estimates,
    frozen_rebuild,
    graph,
    lint_pools,
    ops_reference,
    plan_status,
    report,
    schema,
    validate,
)
from vlitc.errors import (
    BudgetExceeded,
    ConfigurationError,
    GenerationError,
    InputError,
    RecipeError,
    UserError,
    VlitcError,
)
from vlitc.plan import Plan, build_plan
from vlitc.recipe import Recipe
from vlitc.records import IMAGE_TOKEN
from vlitc.run.executor import BuildResult

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "BuildResult",
    "ConfigurationError",
    "GenerationError",
    "IMAGE_TOKEN",
    "InputError",
    "Plan",
    "Recipe",
    "RecipeError",
    "UserError",
    "VlitcError",
    "__version__",
    "build",
    "build_plan",
    "cache_gc",
    "diff",
    "estimates",
    "frozen_rebuild",
    "graph",
    "lint_pools",
    "ops_reference",
    "plan_status",
    "report",
    "schema",
    "validate",
]
