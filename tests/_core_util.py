"""Helpers for core tests: a copy of the demo recipe in a temp folder, and event queries."""

from __future__ import annotations

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
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def ran(result) -> set[str]:
    return {e["step"] for e in result.events if e.get("event") == "step" and e["status"] == "ran"}


def cached(result) -> set[str]:
    return {e["step"] for e in result.events if e.get("event") == "step" and e["status"] == "cached"}
