#!/usr/bin/env bash
# Run every benchmark with its default settings (about 10-15 minutes on 2 cores) and keep
# each printed table under benchmarks/out/. Peers are included when their side venvs exist
# (the scripts install them on first use with --with-llama-cpp-python / --with-litellm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p benchmarks/out
peers_engine=(); peers_gateway=()
[ -x benchmarks/out/peer-llama-cpp-python/bin/python ] && peers_engine=(--with-llama-cpp-python)
[ -x benchmarks/out/peer-litellm/bin/litellm ] && peers_gateway=(--with-litellm)
$PY benchmarks/engine_throughput.py "${peers_engine[@]}" 2>/dev/null | tee benchmarks/out/engine_throughput.txt
$PY benchmarks/gateway_overhead.py "${peers_gateway[@]}" 2>/dev/null | tee benchmarks/out/gateway_overhead.txt
$PY benchmarks/prompt_scaling.py 2>/dev/null | tee benchmarks/out/prompt_scaling.txt
$PY benchmarks/gateway_memory.py 2>/dev/null | tee benchmarks/out/gateway_memory.txt
$PY benchmarks/usage_query.py 2>/dev/null | tee benchmarks/out/usage_query.txt
$PY benchmarks/console_load.py 2>/dev/null | tee benchmarks/out/console_load.txt
$PY benchmarks/on_demand.py 2>/dev/null | tee benchmarks/out/on_demand.txt
$PY benchmarks/replicas.py 2>/dev/null | tee benchmarks/out/replicas.txt
