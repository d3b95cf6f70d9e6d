"""Typed errors raised by the library; only the CLI formats them.

    VlitcError                      base; ``exit_code`` 1 (internal)
    +-- UserError                   exit_code 2: the user can fix it
    |   +-- RecipeError             one or more located problems in a recipe
    |   +-- InputError              an input file is missing or malformed
    |   +-- ConfigurationError      environment, credentials, missing extras
    |   +-- GenerationError         a generator failed in a way the user must act on
    |   +-- BudgetExceeded          a ``budget`` limit stopped the build cleanly
    +-- CacheError                  the cache is unusable (not a corrupt entry: that is a miss)
"""

from __future__ import annotations

from typing import NamedTuple

# named tuples, not dataclasses: every command imports this module, and importing dataclasses
# would take twenty of the milliseconds a no-op build answers in


class Location(NamedTuple):
    """A place in a file: 1-based line and column; ``line`` 0 means the whole file."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


class Problem(NamedTuple):
    """One located problem: where, which key path, what is wrong, and how to fix it."""

    location: Location
    path: str
    message: str
    hint: str = ""
    excerpt: str = ""

    def format(self) -> str:
        head = f"{self.location}: "
        if self.path:
            head += f"{self.path}: "
        lines = [head + self.message]
        if self.excerpt and self.location.line:
            lines.append(f"{self.location.line:>5} | {self.excerpt}")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


#: optional packages (top-level modules) and the extra that installs each
EXTRAS = {"torch": "clip", "torchvision": "clip", "open_clip": "clip",
          "sentence_transformers": "quality", "sklearn": "quality", "datasketch": "quality",
          "pyarrow": "parquet", "ray": "ray", "tokenizers": "trainers",
          "transformers": "trainers"}


def install_hint(module: str) -> str:
    """How to install the package that provides ``module``."""
    extra = EXTRAS.get(module.split(".")[0])
    return f"pip install 'vlitc[{extra}]'" if extra else f"pip install {module}"


class VlitcError(Exception):
    """Base of every error vlitc raises on purpose."""

    exit_code = 1


class UserError(VlitcError):
    """Something the user can fix: a recipe, an input, a setting."""

    exit_code = 2


class RecipeError(UserError):
    """A recipe has one or more problems, all reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class InputError(UserError):
    """An input file is missing, unreadable or malformed."""

    def __init__(self, message: str, location: Location | None = None, hint: str = ""):
        self.location = location
        self.message = message
        self.hint = hint
        text = f"{location}: {message}" if location else message
        if hint:
            text += f"\nhint: {hint}"
        super().__init__(text)


class ConfigurationError(UserError):
    """The environment is not set up for what the recipe asks (a key, an extra, a server)."""


class GenerationError(UserError):
    """A generator failed in a way that needs the user (bad request, auth, unknown model)."""


class BudgetExceeded(UserError):
    """A budget limit was reached; everything finished before it is kept in the cache."""


class CacheError(VlitcError):
    """The cache directory cannot be used: unreadable, or damaged beyond what a build repairs.
    The machine or the disk is at fault, which the user fixes (exit 2)."""

    exit_code = 2
