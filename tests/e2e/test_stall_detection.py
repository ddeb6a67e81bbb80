"""A replica that still answers its health check but stops sending mid-stream is stuck:
within `stall_timeout_s` (+ one check interval) it is taken out of rotation, its stream
ends with an error event and [DONE], a request still waiting on it goes to the other
replica, and it comes back after its pause. The replicas are two OpenAI-compatible
servers (tests/support/counting_upstream.py); X stalls on purpose."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

from support.counting_upstream import CountingUpstream, answerer, plain_chat, replica_of
from support.models import SMOLLM2
from support.server import ModelportServer, wait_for

MODEL = "s"
STALL_S = 1.5
INTERVAL_S = 0.25


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, counting_upstreams):
    x, y = counting_upstreams
    # Weights 1 and 0: X takes every request while it is in rotation, Y the rest.
    server = ModelportServer({"server": {"health_check_interval_s": INTERVAL_S}, "models": [{
        "name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "replicas": 0,
        "strategy": "weighted", "stall_timeout_s": STALL_S,
        "deployments": [{"url": x.url, "weight": 1}, {"url": y.url, "weight": 0}]}]},
        tmp_path_factory.mktemp("stall"))
    server.start(timeout=60)
    yield server
    server.stop()


def chat(gateway: ModelportServer) -> httpx.Response:
    return plain_chat(gateway.base_url, MODEL)


def replica(gateway: ModelportServer, upstream: CountingUpstream) -> dict:
    return replica_of(gateway.health(), MODEL, upstream)


def test_a_replica_that_stops_sending_mid_stream_is_taken_out_and_comes_back(
        counting_upstreams, gateway):
    x, y = counting_upstreams
    x.mode = "stall"
    stream: dict = {"lines": []}
    first_byte = threading.Event()

    def read_stream() -> None:
        with httpx.stream("POST", gateway.base_url + "/chat/completions", timeout=30, json={
                "model": MODEL, "stream": True,
                "messages": [{"role": "user", "content": "Hi"}]}) as reply:
            stream["replica"] = reply.headers["x-modelport-replica"]
            for line in reply.iter_lines():
                if not first_byte.is_set():
                    stream["first"] = time.monotonic()
                    first_byte.set()
                if line:
                    stream["lines"].append(line)
        stream["ended"] = time.monotonic()

    waiting: dict = {}

    def wait_for_answer() -> None:
        started = time.monotonic()
        waiting["answer"] = chat(gateway)
        waiting["took"] = time.monotonic() - started

    streaming = threading.Thread(target=read_stream)
    streaming.start()
    assert first_byte.wait(10), "the stream did not start"
    asked_before = x.requests
    plain = threading.Thread(target=wait_for_answer)  # sent to X, which never answers
    plain.start()
    streaming.join(STALL_S + 5)
    plain.join(STALL_S + 5)
    assert not streaming.is_alive() and not plain.is_alive(), "a request to X hung"

    # The stream: X's first event, then an error event and [DONE], within the stall
    # timeout plus a check interval (and some slack for a busy machine).
    assert stream["replica"] == f"{MODEL}@{x.host_port}"
    assert "from X" in stream["lines"][0]
    assert stream["lines"][-1] == "data: [DONE]"
    error = orjson.loads(stream["lines"][-2].removeprefix("data: "))["error"]
    assert error["code"] == "replica_stalled" and "stopped sending" in error["message"]
    assert STALL_S <= stream["ended"] - stream["first"] < STALL_S + INTERVAL_S + 1.5
    # The request waiting on X went to Y once X was taken out of rotation.
    assert x.requests == asked_before + 1
    assert answerer(waiting["answer"]) == "Y" and waiting["took"] < STALL_S + INTERVAL_S + 1.5

    state = replica(gateway, x)
    assert state["state"] == "unresponsive" and "stalled" in state["detail"]
    before = x.requests
    assert [answerer(chat(gateway)) for _ in range(3)] == ["Y"] * 3
    assert x.requests == before  # out of rotation: X gets nothing

    x.mode = "ok"  # X recovers; after its pause it is tried again and serves
    wait_for(lambda: answerer(chat(gateway)) == "X", 10, "X back in rotation")
    assert replica(gateway, x)["state"] == "ready"
    assert "stalled: its started answers got no bytes" in gateway.log_path.read_text()
