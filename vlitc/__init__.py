"""vlitc: compile declarative YAML recipes into vision-language instruction-tuning datasets."""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from vlitc.errors import (
    BudgetExceeded,
    ConfigurationError,
    GenerationError,
    InputError,
    RecipeError,
    UserError,
    VlitcError,
)
from vlitc.records import IMAGE_TOKEN

if _TYPE_CHECKING:
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
    from vlitc.plan import Plan, build_plan
    from vlitc.recipe import Recipe
    from vlitc.run.executor import BuildResult

__version__ = "0.1.0"

#: loaded on first use, so that `vlitc build` answers a no-op rebuild without the recipe, plan
#: and run layers (see vlitc.run.noop)
_LAZY = {
    "build": "vlitc.api",
    "cache_gc": "vlitc.api",
    "diff": "vlitc.api",
    "estimates": "vlitc.api",
    "frozen_rebuild": "vlitc.api",
    "graph": "vlitc.api",
    "lint_pools": "vlitc.api",
    "ops_reference": "vlitc.api",
    "plan_status": "vlitc.api",
    "report": "vlitc.api",
    "schema": "vlitc.api",
    "validate": "vlitc.api",
    "Plan": "vlitc.plan",
    "build_plan": "vlitc.plan",
    "Recipe": "vlitc.recipe",
    "BuildResult": "vlitc.run.executor",
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlitc' has no attribute {name!r}")

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
