"""Two gateways on one real Redis share their routing state: gateway B's least_busy counts
the streams gateway A holds on a machine they both send to, and a machine A paused after
it failed is skipped by B without B sending it a request. The machines are two
OpenAI-compatible servers (tests/support/counting_upstream.py) that say who answered and
count the requests they get."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx
import pytest

from support.counting_upstream import CountingUpstream, answerer, plain_chat, replica_of
from support.models import SMOLLM2
from support.redis_server import RedisServer
from support.server import ModelportServer, wait_for

MODEL = "m"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, counting_upstreams):
    x, y = counting_upstreams
    redis = RedisServer(tmp_path_factory.mktemp("redis"))

    def gateway(strategy: str) -> ModelportServer:
        return ModelportServer({"server": {"redis_url": redis.url}, "models": [{
            "name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "replicas": 0,
            "parallel": 4, "strategy": strategy,
            "deployments": [{"url": x.url, "weight": 1}, {"url": y.url, "weight": 0}]}]},
            tmp_path_factory.mktemp(f"gateway-{strategy}"))

    # A sends everything to X while X takes it (weights 1 and 0), so its load is lopsided
    # on purpose; B balances by load.
    first, second = gateway("weighted"), gateway("least_busy")
    started = []
    try:
        for one in (first, second):
            one.start(timeout=60)
            started.append(one)
        yield first, second
    finally:
        for one in started:
            one.stop()
        redis.stop()


def chat(gateway: ModelportServer) -> httpx.Response:
    return plain_chat(gateway.base_url, MODEL)


def answered_by(gateway: ModelportServer, count: int) -> list[str]:
    """Who answered each of `count` requests sent one after the other."""
    names = []
    for _ in range(count):
        names.append(answerer(chat(gateway)))
    return names


def replica(gateway: ModelportServer, upstream: CountingUpstream) -> dict:
    return replica_of(gateway.health(), MODEL, upstream)


@contextlib.contextmanager
def streams_held(gateway: ModelportServer, count: int) -> Iterator[list[str]]:
    """`count` streams open through `gateway` while inside; yields who serves each."""
    served: list[str] = []
    release = threading.Event()
    opened = threading.Semaphore(0)

    def hold() -> None:
        with httpx.stream("POST", gateway.base_url + "/chat/completions", timeout=60, json={
                "model": MODEL, "stream": True, "max_tokens": 1000,
                "messages": [{"role": "user", "content": "Tell a long story."}]}) as reply:
            served.append(reply.headers["x-modelport-replica"])
            for _ in reply.iter_lines():
                opened.release()
                release.wait(60)  # reading on: leaving the loop would close the stream
                break

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(count):
            assert opened.acquire(timeout=30), "a stream did not start"
        yield served
    finally:
        release.set()
        for thread in threads:
            thread.join(30)


def test_least_busy_counts_the_streams_another_gateway_holds(counting_upstreams, gateways):
    x, y = counting_upstreams
    a, b = gateways
    # Idle everywhere: B's least_busy takes turns between X and Y.
    assert sorted(answered_by(b, 4)) == ["X", "X", "Y", "Y"]

    with streams_held(a, 3) as served:
        assert served == [f"{MODEL}@{x.host_port}"] * 3 and x.open_streams == 3
        wait_for(lambda: replica(b, x)["in_flight_other_gateways"] == 3, 5,
                 "A's streams counted by B")
        assert replica(b, x)["in_flight"] == 0 and replica(b, y)["in_flight_other_gateways"] == 0
        before = x.requests
        # B has nothing in flight itself, yet sends every request to the idle machine.
        assert answered_by(b, 4) == ["Y"] * 4
        assert x.requests == before
    wait_for(lambda: replica(b, x)["in_flight_other_gateways"] == 0, 5,
             "A's finished streams no longer counted")


def test_a_machine_paused_through_one_gateway_is_skipped_by_the_other(counting_upstreams, gateways):
    x, y = counting_upstreams
    a, b = gateways
    x.mode = "fail"
    try:
        failed_before = x.requests
        assert answered_by(a, 1) == ["Y"]  # X failed first; A moved on and paused X
        assert x.requests == failed_before + 1
        assert replica(a, x)["state"] == "unresponsive"
        paused = wait_for(lambda: (lambda r: r if r["state"] == "unresponsive" else None)(
            replica(b, x)), 3, "X paused on B too")
        assert paused["detail"].startswith("paused by another gateway: failed: ")
        before = x.requests
        assert answered_by(b, 4) == ["Y"] * 4
        assert x.requests == before  # B never sent X a request
    finally:
        x.mode = "ok"
