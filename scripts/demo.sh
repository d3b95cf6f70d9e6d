#!/usr/bin/env bash
# Set up the core and build the demo recipe offline; the release lands in build/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --core
.venv/bin/vlitc build recipes/demo.yaml "$@"
