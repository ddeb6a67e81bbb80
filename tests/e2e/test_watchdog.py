"""A worker that stops answering (SIGSTOP: the process lives, the model does nothing) is
taken out of rotation within two health probes, its requests end instead of hanging, and
it is killed and restarted after `worker_stall_timeout_s`."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from support.models import SMOLLM2
from support.server import ModelportServer, pid_alive, wait_for

MODEL = "watched"
STALL_S = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = ModelportServer({
        "server": {"health_check_interval_s": 0.5, "worker_stall_timeout_s": STALL_S},
        "models": [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2,
                    "context_length": 1024, "parallel": 2}],
    }, tmp_path_factory.mktemp("watchdog"))
    instance.start()
    yield instance
    instance.stop()


def model_health(server) -> dict:
    return server.health()["models"][MODEL]


def chat(server, timeout: float = 60.0, **fields) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", timeout=timeout, json={
        "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}],
        **fields})


def test_a_stopped_worker_is_taken_out_of_rotation_then_restarted(server):
    assert chat(server).status_code == 200
    pid = model_health(server)["worker"]["pid"]
    outcome: dict = {}

    def caught_in_the_stop():
        started = time.monotonic()
        try:
            response = chat(server, stream=True)
            outcome["status"], outcome["body"] = response.status_code, response.text
        except httpx.HTTPError as error:
            outcome["error"] = repr(error)
        outcome["took"] = time.monotonic() - started

    os.kill(pid, signal.SIGSTOP)
    try:
        in_flight = threading.Thread(target=caught_in_the_stop)
        in_flight.start()
        stopped_at = time.monotonic()
        wait_for(lambda: model_health(server)["status"] == "unresponsive", 5,
                 "taken out of rotation")
        # New requests are refused at once instead of joining the stopped worker.
        started = time.monotonic()
        refused = chat(server)
        assert refused.status_code == 503, refused.text
        assert time.monotonic() - started < 2 and refused.headers["retry-after"]
        assert "unresponsive" in refused.json()["error"]["message"]

        # The request sent into the stop ends (with an error) once the worker is killed.
        in_flight.join(STALL_S + 15)
        assert not in_flight.is_alive(), "a request to the stopped worker hung"
        assert outcome["took"] < STALL_S + 15
        assert "error" in outcome.get("body", "") or "error" in outcome
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)

    wait_for(lambda: not pid_alive(pid), 10, "the stopped worker killed")
    assert time.monotonic() - stopped_at >= STALL_S - 1
    health = wait_for(lambda: (lambda m: m if m["status"] == "ready" else None)(
        model_health(server)), 60, "restarted")
    assert health["worker"]["pid"] != pid and health["restarts"] >= 1
    assert chat(server).status_code == 200
    assert "not answering health checks" in server.log_path.read_text()
