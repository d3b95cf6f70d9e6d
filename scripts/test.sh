#!/usr/bin/env bash
# Set up everything, type-check and lint, and run the tests. Extra arguments go to pytest,
# e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m mypy vlitc
.venv/bin/python -m ruff check vlitc tests benchmarks scripts
.venv/bin/python -m pytest "$@"
