"""Models on demand against a real server: two GGUF models (SmolLM2 and Gemma 3) that
load on their first request with `max_loaded: 1`, idle unloading, one load shared by
concurrent first requests, the 503s of a load that cannot happen or takes too long, and
the admin API and CLI that load and unload."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fixtures.gemma import gemma_gguf_path
from support.models import SMOLLM2
from support.server import ModelportServer, pid_alive, slot_held, wait_for

MASTER = "mk-on-demand-test"
SMOL, GEMMA, IDLE, IMPATIENT = "smol", "gemma", "idle-smol", "impatient-smol"
IDLE_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = ModelportServer({
        "server": {"master_key": MASTER, "max_loaded": 1},
        "models": [
            {"name": SMOL, "engine": "llamacpp", "path": SMOLLM2, "load": "on_demand",
             "context_length": 1024, "parallel": 8},
            {"name": GEMMA, "engine": "llamacpp", "path": str(gemma_gguf_path()),
             "load": "on_demand", "context_length": 1024, "parallel": 1, "max_queue": 0},
            {"name": IDLE, "engine": "llamacpp", "path": SMOLLM2, "load": "on_demand",
             "context_length": 512, "parallel": 1, "idle_unload_s": IDLE_S},
            {"name": IMPATIENT, "engine": "llamacpp", "path": SMOLLM2, "load": "on_demand",
             "context_length": 512, "parallel": 1, "load_timeout_s": 0.05},
        ],
    }, tmp_path_factory.mktemp("on-demand"))
    instance.start()
    yield instance
    instance.stop()


def admin(server, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, server.url + "/admin" + path, timeout=120,
                         headers={"Authorization": f"Bearer {MASTER}"}, **kw)


def state(server, name: str) -> dict:
    response = admin(server, "GET", f"/models/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def unload_all(server) -> None:
    for name in (SMOL, GEMMA, IDLE, IMPATIENT):
        assert admin(server, "POST", f"/models/{name}/unload").json()["state"] == "unloaded"


def chat(server, model: str, **fields) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {MASTER}"}, json={
                          "model": model, "max_tokens": 4,
                          "messages": [{"role": "user", "content": "Hi"}], **fields})


def test_on_demand_models_are_listed_unloaded_and_the_server_is_ready(server):
    unload_all(server)
    listing = httpx.get(server.base_url + "/models", timeout=10,
                        headers={"Authorization": f"Bearer {MASTER}"}).json()
    cards = {card["id"]: card for card in listing["data"]}
    assert cards[SMOL]["status"] == "unloaded" and cards[SMOL]["load"] == "on_demand"
    assert cards[GEMMA]["status"] == "unloaded"
    assert httpx.get(server.url + "/health/ready", timeout=10).status_code == 200


def test_a_request_to_each_in_turn_loads_it_and_evicts_the_other(server):
    unload_all(server)
    assert chat(server, SMOL).status_code == 200
    first_smol = state(server, SMOL)["pid"]
    assert pid_alive(first_smol) and state(server, GEMMA)["pid"] is None

    reply = chat(server, GEMMA)
    assert reply.status_code == 200, reply.text
    gemma = state(server, GEMMA)
    assert gemma["state"] == "ready" and pid_alive(gemma["pid"])
    assert not pid_alive(first_smol), "loading gemma should have stopped smol's worker"
    assert state(server, SMOL)["state"] == "unloaded"

    assert chat(server, SMOL).status_code == 200
    second_smol = state(server, SMOL)["pid"]
    assert pid_alive(second_smol) and second_smol != first_smol
    assert not pid_alive(gemma["pid"]), "loading smol again should have stopped gemma's worker"
    assert f"evicted to load '{GEMMA}'" in server.log_path.read_text()


def test_eight_concurrent_first_requests_cause_one_load(server):
    unload_all(server)
    loads_before = server.log_path.read_text().count(f"model '{SMOL}': loading on demand")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: chat(server, SMOL), range(8)))
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
    loads_after = server.log_path.read_text().count(f"model '{SMOL}': loading on demand")
    assert loads_after == loads_before + 1
    assert state(server, SMOL)["restarts"] == 0


def test_an_idle_model_is_unloaded_after_idle_unload_s_and_loads_again(server):
    assert chat(server, IDLE).status_code == 200
    answered = time.monotonic()
    pid = state(server, IDLE)["pid"]
    assert pid_alive(pid)
    wait_for(lambda: state(server, IDLE)["state"] == "unloaded", 15, "unloaded")
    unloaded_after = time.monotonic() - answered
    assert not pid_alive(pid)
    assert IDLE_S - 0.1 <= unloaded_after <= IDLE_S + 3, unloaded_after
    assert chat(server, IDLE).status_code == 200
    assert state(server, IDLE)["pid"] not in (None, pid)


def test_a_load_with_nothing_evictable_is_refused_with_the_reason(server):
    assert chat(server, SMOL).status_code == 200
    with slot_held(server, SMOL, headers={"Authorization": f"Bearer {MASTER}"}):
        reply = chat(server, GEMMA)
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["code"] == "no_room_to_load"
    assert "max_loaded is 1" in error["message"] and f"'{SMOL}'" in error["message"]
    assert int(reply.headers["retry-after"]) >= 1
    assert state(server, SMOL)["state"] == "ready"


def test_a_load_slower_than_load_timeout_s_gets_503_with_retry_after_and_goes_on(server):
    unload_all(server)
    reply = chat(server, IMPATIENT)
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "model_loading"
    assert "load_timeout_s" in reply.json()["error"]["message"]
    assert int(reply.headers["retry-after"]) >= 1
    wait_for(lambda: state(server, IMPATIENT)["state"] == "ready", 120, "loaded")
    assert chat(server, IMPATIENT).status_code == 200


def test_admin_load_and_unload_from_the_cli(server):
    unload_all(server)
    env = {**os.environ, "COLUMNS": "200", "MODELPORT_MASTER_KEY": MASTER}
    loaded = subprocess.run([sys.executable, "-m", "modelport", "load", GEMMA, "--url",
                             server.url], capture_output=True, text=True, timeout=300, env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"{GEMMA} is loaded" in loaded.stdout
    pid = state(server, GEMMA)["pid"]
    assert pid_alive(pid) and state(server, GEMMA)["memory_bytes"] > 0
    unloaded = subprocess.run([sys.executable, "-m", "modelport", "unload", GEMMA, "--url",
                               server.url], capture_output=True, text=True, timeout=120, env=env)
    assert unloaded.returncode == 0, unloaded.stdout + unloaded.stderr
    assert f"{GEMMA} is unloaded" in unloaded.stdout
    assert not pid_alive(pid)


def test_admin_model_routes_need_the_master_key_and_know_the_models(server):
    assert httpx.get(server.url + "/admin/models", timeout=10).status_code == 401
    listing = admin(server, "GET", "/models").json()["data"]
    assert {m["name"] for m in listing} == {SMOL, GEMMA, IDLE, IMPATIENT}
    assert set(listing[0]) == {"object", "name", "state", "engine", "load", "last_used", "pid",
                               "memory_bytes", "file_bytes", "in_flight", "restarts",
                               "last_error", "strategy", "replicas", "queue"}
    missing = admin(server, "POST", "/models/nope/load")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    bad = admin(server, "POST", f"/models/{SMOL}/load", params={"wait": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "wait"
