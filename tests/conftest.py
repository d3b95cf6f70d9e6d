"""Shared test fixtures. Real public files live in ../shared/fixtures and are read in place."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """The shared public fixture files; tests that need them skip with a reason when absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _exercised_ops(request, monkeypatch):
    """A test marked ``@pytest.mark.exercises(op, ...)`` must run each op (see tests/_op_contract.py)."""
    mark = request.node.get_closest_marker("exercises")
    if mark is None:
        yield
        return
    from tests._op_contract import classes_for, recording

    with recording(classes_for(mark.args), monkeypatch.setattr) as called:
        yield
    never = sorted(set(mark.args) - called)
    if never and not getattr(request.node, "_call_not_passed", False):
        pytest.fail(f"marked as exercising {', '.join(never)}, but never called its family method")


_NOT_INSTALLED = re.compile(r"package '([\w.]+)', which is not installed")


def _missing_extra(exc: BaseException | None, captured: str) -> str | None:
    """The extra a failure is due to, when it is a package of an extra that is not installed."""
    from vlitc.errors import EXTRAS

    names = []
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            names.append(exc.name)
        names += _NOT_INSTALLED.findall(str(exc))
        exc = exc.__cause__ or exc.__context__
    names += _NOT_INSTALLED.findall(captured)
    for name in names:
        top = name.split(".")[0]
        if top in EXTRAS and importlib.util.find_spec(top) is None:
            return EXTRAS[top]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On an install without an optional extra, a test that needs it skips and names the extra
    (on a full install, as in CI, every such test runs)."""
    outcome = yield
    rep = outcome.get_result()
    if call.when == "call" or (call.when == "setup" and not rep.passed):  # a fixture that skipped
        item._call_not_passed = not rep.passed
    if rep.failed and call.excinfo is not None:
        extra = _missing_extra(call.excinfo.value, "".join(text for _, text in rep.sections))
        if extra is not None:
            rep.outcome = "skipped"
            rep.longrepr = (str(item.path), item.location[1] or 0,
                            f"Skipped: needs the '{extra}' extra (pip install 'vlitc[{extra}]')")
