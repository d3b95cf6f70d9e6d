"""vlitc: compile declarative YAML recipes into vision-language instruction-tuning datasets."""

from vlitc.api import build, plan_status, validate
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

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "ConfigurationError",
    "GenerationError",
    "IMAGE_TOKEN",
    "InputError",
    "RecipeError",
    "UserError",
    "VlitcError",
    "__version__",
    "build",
    "plan_status",
    "validate",
]
