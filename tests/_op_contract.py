"""Which ops a test exercises: ``@pytest.mark.exercises("filter.min_words", ...)``.

A test carrying the mark must build each named op and call its family's method (``load``,
``templates``, ``run``, ``measure``, ``export``, ``write``; a generator is built), in the test's
own process, and assert on the result: conftest wraps those methods while the test runs and fails
it when one named op was never called. The registry contract test requires a marked test for
every registered op, so that a new op without a test that runs it fails the suite.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vlitc.ops import registry

#: the method that produces an op's output, per family
FAMILY_METHOD = {"source": "load", "pool": "templates", "task": "run", "generator": "__init__",
                 "filter": "measure", "balance": "run", "exporter": "export", "report": "write"}

TESTS = Path(__file__).resolve().parent


def op_id(cls: type) -> str:
    return f"{cls.family}.{cls.name}"  # type: ignore[attr-defined]


@contextmanager
def recording(classes: list[type], setattr_: Callable) -> Iterator[set[str]]:
    """Wrap each class's family method; yields the set of op ids whose method was called."""
    called: set[str] = set()

    def wrap(cls: type, original: Callable) -> Callable:
        def method(self, *args, **kwargs):
            called.add(op_id(type(self)))
            return original(self, *args, **kwargs)

        return method

    for cls in classes:
        name = FAMILY_METHOD[cls.family]  # type: ignore[attr-defined]
        setattr_(cls, name, wrap(cls, getattr(cls, name)))
    yield called


def marked_ops() -> dict[str, list[str]]:
    """op id -> ``file::test`` of every test function marked as exercising it that asserts."""
    out: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not fn.name.startswith("test"):
                continue
            asserts = any(isinstance(n, ast.Assert) for n in ast.walk(fn))
            for dec in fn.decorator_list:
                if isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("mark.exercises") and asserts:
                    for arg in dec.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            out.setdefault(arg.value, []).append(f"{path.relative_to(TESTS)}::{fn.name}")
    return out


def classes_for(ids: tuple[str, ...]) -> list[type]:
    out = []
    for i in ids:
        family, _, name = i.partition(".")
        out.append(registry.get(family, name))
    return out
