"""Three on-demand models under a memory budget that fits two, against a real server:
bursts of requests alternating A, B, C, each fired before the previous one is served.

Count-based LRU (`max_loaded: 2`, swapping at once: `swap_max_wait_s: 0`) unloads a model
in the middle of its burst to load the next one, whose queued requests then load it
again. The memory-aware scheduler (`memory_budget` fitting two, `swap_max_wait_s`) lets
the loaded models serve their queued requests first. Both runs serve the same bursts in
this test; the second loads fewer times and cuts no request. (Without swap_max_wait_s at
all, a load that finds both loaded models busy is refused: 503 no_room_to_load, which
benchmarks/residency.py counts.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from support.model_bursts import alternate_bursts, loads_in, memory_of, on_demand_models
from support.server import ModelportServer

MODELS = ["model-a", "model-b", "model-c"]
# A KV cache large enough that each model's estimate, not only the worker's own memory,
# decides what fits (4096 x 2 tokens: 189 MB of f16 keys and values).
CONTEXT, PARALLEL = 4096, 2
# Each burst: 2 clients sending 2 requests each, one after the other; the next model's
# burst starts 0.3 s later (long before the first load ends).
ROUNDS, CLIENTS, PER_CLIENT, GAP_S, MAX_TOKENS = 1, 2, 2, 0.3, 8
SWAP_MAX_WAIT_S = 5


def run_bursts(server: ModelportServer):
    return asyncio.run(alternate_bursts(server.base_url, MODELS, ROUNDS, CLIENTS, PER_CLIENT,
                                        GAP_S, MAX_TOKENS))


@pytest.fixture(scope="module")
def count_based(tmp_path_factory):
    server = ModelportServer({
        "server": {"max_loaded": 2, "swap_max_wait_s": 0},
        "models": on_demand_models(MODELS, CONTEXT, PARALLEL),
    }, tmp_path_factory.mktemp("count-lru")).start()
    try:
        run = run_bursts(server)
        health = server.health()
        loaded = [m for m in MODELS if health["models"][m]["memory"]["resident"]]
        unloaded = [m for m in MODELS if m not in loaded]
        # What a loaded model counts (its worker measured) and what one counts before it
        # loads (the estimate): a budget between "one loaded + one loading" and "two
        # loaded + one loading" fits two models and never three.
        held = max(memory_of(health, m) for m in loaded)
        estimate = memory_of(health, unloaded[0])
        yield run, loads_in(server.log_path, MODELS), held, estimate, server
    finally:
        server.stop()


def test_a_memory_budget_that_fits_two_loads_fewer_times_than_count_lru_and_cuts_nothing(
        count_based, tmp_path):
    lru_run, lru_loads, held, estimate, _ = count_based
    assert len(lru_run.answers) == ROUNDS * CLIENTS * PER_CLIENT * len(MODELS)
    budget = int(1.5 * held + estimate)
    assert held + estimate <= budget < 2 * held + estimate

    server = ModelportServer({
        "server": {"memory_budget": budget, "swap_max_wait_s": SWAP_MAX_WAIT_S},
        "models": on_demand_models(MODELS, CONTEXT, PARALLEL),
    }, tmp_path).start()
    try:
        run = run_bursts(server)
        loads = loads_in(server.log_path, MODELS)
        health = server.health()
    finally:
        server.stop()

    assert run.cut == [], [(a.model, a.status, a.detail) for a in run.cut]
    assert len(run.answers) == ROUNDS * CLIENTS * PER_CLIENT * len(MODELS)
    assert loads < lru_loads, (loads, lru_loads)
    # Never more than two held at once, and /health says so per device.
    cpu = health["memory"]["cpu"]
    assert cpu["budget_bytes"] == budget and len(cpu["models"]) <= 2
    assert cpu["used_bytes"] <= budget + held  # measured memory may pass the estimate


def test_modelport_models_shows_what_each_model_holds_per_device(count_based):
    *_, server = count_based
    health = server.health()
    loaded = sorted(m for m in MODELS if health["models"][m]["memory"]["resident"])
    assert sorted(health["memory"]["cpu"]["models"]) == loaded and len(loaded) == 2
    assert all(health["models"][m]["memory"]["bytes"].keys() == {"cpu"} for m in MODELS)
    shown = subprocess.run([sys.executable, "-m", "modelport", "models", "--url", server.url],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "120"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.count("MiB on cpu") == 2  # "holds N MiB on cpu", the loaded two
    assert f"(no budget) by {', '.join(health['memory']['cpu']['models'])}" in shown.stdout
