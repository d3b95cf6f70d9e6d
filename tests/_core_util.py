"""Helpers for core tests: a copy of the demo recipe in a temp folder, and event queries."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = ROOT / "recipes" / "demo.yaml"
DEMO_DATA = ROOT / "recipes" / "data" / "demo"


def demo_copy(tmp_path: Path, copy_annotations: bool = False) -> Path:
    """The demo recipe in ``tmp_path`` with its data paths pointing at the shipped demo data
    (or at a private copy of the annotations, for tests that edit them)."""
    text = DEMO_RECIPE.read_text()
    data = DEMO_DATA
    if copy_annotations:
        shutil.copytree(DEMO_DATA / "annotations", tmp_path / "annotations")
        text = text.replace("data/demo/annotations", str(tmp_path / "annotations"))
    text = text.replace("data/demo", str(data))
    # the response-diversity indicator loads an embedding model; core tests do not need it
    text = text.replace("indicators: {response: true}", "indicators: {response: false}")
    if importlib.util.find_spec("pyarrow") is None:  # core-only install: no Parquet output
        text = "".join(line for line in text.splitlines(keepends=True) if "format: parquet" not in line)
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def ran(result) -> set[str]:
    return {e["step"] for e in result.events if e.get("event") == "step" and e["status"] == "ran"}


def cached(result) -> set[str]:
    return {e["step"] for e in result.events if e.get("event") == "step" and e["status"] == "cached"}


def needs(module: str):
    """Skip the calling test, naming the extra, when ``module`` (from an optional extra) is absent."""
    import pytest

    from vlitc.errors import EXTRAS

    extra = EXTRAS[module.split(".")[0]]
    return pytest.importorskip(module, reason=f"needs the '{extra}' extra (pip install 'vlitc[{extra}]')")
