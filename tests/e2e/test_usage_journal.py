"""Usage rows through a kill -9, end to end: a real gateway in front of the real SmolLM2
model, killed (with its worker) under load, then started again on the same database;
the rows it lost are at most those of its last 100 ms, counted."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx

from support.models import SMOLLM2
from support.server import ModelportServer

MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
WINDOW_S = 0.1


def gateway(workdir) -> ModelportServer:
    return ModelportServer(
        {"server": {"master_key": "${E2E_MASTER}", "data_dir": str(workdir)},
         "models": [{"name": "smollm2", "engine": "llamacpp", "path": SMOLLM2,
                     "context_length": 2048, "parallel": 8}]},
        workdir, env={"E2E_MASTER": MASTER})


def test_kill_9_under_load_loses_at_most_the_last_100_ms_of_usage(tmp_path):
    first = gateway(tmp_path).start()
    made = httpx.post(first.url + "/admin/keys", headers=ADMIN, json={"name": "journal"},
                      timeout=30)
    secret, key_id = made.json()["key"], made.json()["id"]
    answered: list[float] = []  # when each answer came back
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=first.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {secret}"}) as http:
            while not stop.is_set():
                try:
                    http.post("/chat/completions", json={
                        "model": "smollm2", "max_tokens": 2,
                        "messages": [{"role": "user", "content": "Hi"}]})
                except httpx.HTTPError:
                    return  # the gateway is gone
                answered.append(time.monotonic())

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 120
    while len(answered) < 60:  # well under load
        assert time.monotonic() < deadline, f"only {len(answered)} answers"
        time.sleep(0.1)
    killed_at = time.monotonic()
    os.killpg(first.process.pid, signal.SIGKILL)  # the gateway and its worker, at once
    first.process.wait(10)
    stop.set()
    for thread in clients:
        thread.join(30)
    received = [t for t in answered if t <= killed_at]
    last_window = sum(1 for t in received if t > killed_at - WINDOW_S)

    second = gateway(tmp_path).start()
    try:
        rows = httpx.get(second.url + "/admin/usage?group_by=key", headers=ADMIN,
                         timeout=30).json()["data"]
        stored = next(r["requests"] for r in rows if r["key"] == key_id)
        lost = len(received) - stored
        assert lost <= last_window, (len(received), stored, last_window)
        # No row twice: at most the requests that were still running when it died.
        assert stored <= len(received) + len(clients)
        assert "usage row(s) found in" in second.log()
    finally:
        second.stop()
