"""Stopping the gateway with requests in flight: drain, then end the rest properly, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from support.models import SMOLLM2
from support.server import ModelportServer, pid_alive

pytestmark = pytest.mark.e2e

MODEL = "smollm2-drain"


def start_server(tmp_path, drain_timeout_s: float) -> ModelportServer:
    config = {"server": {"drain_timeout_s": drain_timeout_s},
              "models": [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2,
                          "context_length": 2048, "parallel": 4}]}
    return ModelportServer(config, tmp_path).start()


class StreamReader(threading.Thread):
    """Reads one streamed chat answer to its end, keeping every `data:` payload."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.events: list = []
        self.first_event = threading.Event()
        self.failure: Exception | None = None

    def run(self) -> None:
        body = {"model": MODEL, "stream": True, "max_tokens": self.max_tokens,
                "ignore_eos": True, "messages": [{"role": "user", "content": "Tell a story."}]}
        try:
            with httpx.stream("POST", self.url + "/chat/completions", json=body,
                              timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        data = line[6:]
                        self.events.append(data if data == "[DONE]" else json.loads(data))
                        self.first_event.set()
        except Exception as error:  # noqa: BLE001 - the test asserts there was none
            self.failure = error
        self.first_event.set()


def streams(server, count, max_tokens):
    readers = [StreamReader(server.base_url, max_tokens) for _ in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.first_event.wait(60)
    return readers


def test_sigterm_lets_streams_in_flight_finish_then_exits_0(tmp_path):
    server = start_server(tmp_path, drain_timeout_s=120)
    try:
        readers = streams(server, 4, max_tokens=16)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(server.url + "/health", timeout=2)
        for reader in readers:
            reader.join(120)
            assert reader.failure is None
            assert reader.events[-1] == "[DONE]"
            assert not any(isinstance(e, dict) and "error" in e for e in reader.events)
            assert sum(1 for e in reader.events if isinstance(e, dict) and e["choices"]
                       and e["choices"][0]["delta"].get("content")) >= 14
        assert server.process.wait(60) == 0
        log = server.log()
        assert "draining 4 requests" in log
        assert "Traceback" not in log and "CancelledError" not in log
    finally:
        server.stop()


def test_requests_past_the_drain_period_end_with_an_error_event_or_a_503(tmp_path):
    server = start_server(tmp_path, drain_timeout_s=1)
    try:
        readers = streams(server, 2, max_tokens=1900)
        waiting: dict = {}

        def non_streaming() -> None:
            waiting["response"] = httpx.post(server.base_url + "/chat/completions", timeout=120,
                                             json={"model": MODEL, "max_tokens": 1900,
                                                   "ignore_eos": True, "messages": [
                                                       {"role": "user", "content": "Go on."}]})

        blocking = threading.Thread(target=non_streaming, daemon=True)
        blocking.start()
        time.sleep(1.0)
        workers = [m["worker"]["pid"] for m in server.health()["models"].values()]
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(60)
            assert reader.failure is None
            assert reader.events[-1] == "[DONE]"
            error = reader.events[-2]["error"]
            assert error["code"] == "server_shutting_down" and error["type"] == "service_unavailable"
        blocking.join(60)
        response = waiting["response"]
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "server_shutting_down"
        assert server.process.wait(60) == 0
        assert time.monotonic() - started < 20
        assert not any(pid_alive(pid) for pid in workers)
        log = server.log()
        assert "draining 3 requests" in log
        assert "Traceback" not in log and "CancelledError" not in log
        assert log.count("stream_error=ShuttingDownError") == 2
    finally:
        server.stop()


def test_sighup_reloads_an_unchanged_config_without_touching_its_worker(tmp_path):
    server = start_server(tmp_path, drain_timeout_s=5)
    try:
        pid = server.health()["models"][MODEL]["worker"]["pid"]
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reloaded" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "config reloaded" in server.log() and "no model changed" in server.log()
        assert server.process.poll() is None
        health = httpx.get(server.url + "/health", timeout=5).json()
        assert health["ready"] and health["models"][MODEL]["worker"]["pid"] == pid
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_stop_signal_ends_the_drain_at_once(tmp_path, sig):
    server = start_server(tmp_path, drain_timeout_s=120)
    try:
        readers = streams(server, 2, max_tokens=1900)
        workers = [m["worker"]["pid"] for m in server.health()["models"].values()]
        server.process.send_signal(sig)
        time.sleep(1.0)
        assert all(reader.is_alive() for reader in readers)  # still draining
        started = time.monotonic()
        server.process.send_signal(sig)
        assert server.process.wait(30) == 0
        assert time.monotonic() - started < 15
        for reader in readers:
            reader.join(30)
            assert reader.failure is None
            assert reader.events[-1] == "[DONE]"
            assert reader.events[-2]["error"]["code"] == "server_shutting_down"
        assert not any(pid_alive(pid) for pid in workers)  # the shutdown still ran
        log = server.log()
        assert f"second {sig.name}: stopping without waiting" in log
        assert "Traceback" not in log and "CancelledError" not in log
    finally:
        server.stop()
