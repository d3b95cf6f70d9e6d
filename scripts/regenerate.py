"""Regenerate what is generated from the op registry, in one command:
``python scripts/regenerate.py`` writes ``schemas/recipe.schema.json`` and ``docs/ops.md``
(the tests fail while either is stale)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vlitc  # noqa: E402


def main() -> int:
    (ROOT / "schemas" / "recipe.schema.json").write_text(json.dumps(vlitc.schema(), indent=2) + "\n")
    (ROOT / "docs" / "ops.md").write_text(vlitc.ops_reference(markdown=True))
    print("wrote schemas/recipe.schema.json and docs/ops.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
