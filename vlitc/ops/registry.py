"""The op registry: ``@register(family, name)`` on a class, ``get(family, name)`` to find it.

Duplicate names raise; an unknown name raises with the closest names ("did you mean").
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from vlitc.ops.base import Op

FAMILIES = ("source", "pool", "task", "generator", "filter", "balance", "exporter", "report")

_REGISTRY: dict[str, dict[str, type[Op]]] = {f: {} for f in FAMILIES}
_loaded = False

T = TypeVar("T", bound="type[Op]")


class UnknownOpError(KeyError):
    """An op name that is not registered; ``suggestions`` holds the closest registered names."""

    def __init__(self, family: str, name: str, suggestions: list[str]):
        self.family, self.name, self.suggestions = family, name, suggestions
        msg = f"unknown {family} {name!r}"
        if suggestions:
            msg += f"; did you mean {' or '.join(repr(s) for s in suggestions)}?"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


def register(family: str, name: str):
    """Class decorator: register an op under ``family``/``name``."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown op family {family!r}; families are {FAMILIES}")

    def deco(cls: T) -> T:
        if name in _REGISTRY[family]:
            other = _REGISTRY[family][name]
            raise ValueError(
                f"{family} op {name!r} registered twice ({other.__module__}.{other.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__})"
            )
        cls.family = family
        cls.name = name
        _REGISTRY[family][name] = cls
        return cls

    return deco


def load_all() -> None:
    """Import every module under ``vlitc.ops`` so that their ops register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import vlitc.ops as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix="vlitc.ops."):
        importlib.import_module(info.name)


def get(family: str, name: str) -> type[Op]:
    load_all()
    try:
        return _REGISTRY[family][name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY[family]), n=2, cutoff=0.6)
        raise UnknownOpError(family, name, close) from None


def names(family: str) -> list[str]:
    load_all()
    return sorted(_REGISTRY[family])


def all_ops() -> list[type[Op]]:
    load_all()
    return [cls for fam in FAMILIES for _, cls in sorted(_REGISTRY[fam].items())]
