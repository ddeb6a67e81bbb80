"""Workers on "another machine": a `modelport worker --register` announces itself in a
real Redis, two gateways with that `server.redis_url` both serve it as a replica of their
model, and both drop it within its TTL once it is gone. A `deployments:` entry reaches
the same worker by its URL without Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from support.models import SMOLLM2
from support.server import ModelportServer, free_port, wait_for

MODEL = "shared"
TTL_S = 3.0
KEY = "worker-key-for-the-remote-test"


@pytest.fixture(scope="module")
def remote_worker(tmp_path_factory, redis_server):
    workdir = tmp_path_factory.mktemp("remote-worker")
    port = free_port()
    config = workdir / "worker.yaml"
    config.write_text(yaml.safe_dump({"models": [{
        "name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "context_length": 1024,
        "parallel": 2, "threads": 1, "worker_key": "${REMOTE_WORKER_KEY}"}]}))
    url = f"http://127.0.0.1:{port}/v1"
    log = open(workdir / "worker.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "worker", MODEL, "--config", str(config),
         "--port", str(port), "--register", redis_server.url, "--advertise", url,
         "--register-ttl", str(TTL_S)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "REMOTE_WORKER_KEY": KEY})
    try:
        wait_for(lambda: _answers(url), 120, "the remote worker up")
        yield process, url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url.removesuffix("/v1") + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, redis_server, remote_worker):
    _, url = remote_worker
    env = {"REMOTE_WORKER_KEY": KEY}
    model = {"name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "replicas": 0,
             "worker_key": "${REMOTE_WORKER_KEY}"}
    first = ModelportServer({
        "server": {"redis_url": redis_server.url},
        "models": [model, {"name": "direct", "engine": "llamacpp", "path": SMOLLM2,
                           "replicas": 0, "deployments": [
                               {"url": url, "api_key": "${REMOTE_WORKER_KEY}"}]}],
    }, tmp_path_factory.mktemp("gateway-a"), env=env)
    second = ModelportServer({"server": {"redis_url": redis_server.url}, "models": [model]},
                             tmp_path_factory.mktemp("gateway-b"), env=env)
    started = []
    try:
        for gateway in (first, second):
            gateway.start(timeout=60)
            started.append(gateway)
        yield first, second
    finally:
        for gateway in started:
            gateway.stop()


def chat(gateway: ModelportServer, model: str = MODEL) -> httpx.Response:
    return httpx.post(gateway.base_url + "/chat/completions", timeout=60, json={
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})


def replica_names(gateway: ModelportServer, model: str = MODEL) -> list[str]:
    return [r["name"] for r in gateway.health()["models"][model]["replicas"]]


def test_two_gateways_share_a_registered_worker_and_drop_it_within_its_ttl(
        remote_worker, gateways):
    process, url = remote_worker
    name = f"{MODEL}@{url.split('://')[1].removesuffix('/v1')}"
    for gateway in gateways:
        answer = chat(gateway)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-modelport-replica"] == name
        (replica,) = gateway.health()["models"][MODEL]["replicas"]
        assert replica["origin"] == "registered" and replica["url"] == url

    # The configured URL reaches the same worker without Redis, with the worker's key.
    direct = chat(gateways[0], "direct")
    assert direct.status_code == 200, direct.text
    assert direct.headers["x-modelport-replica"].startswith("direct@127.0.0.1:")

    os.killpg(process.pid, signal.SIGKILL)  # the worker and its announcer: no goodbye
    process.wait(10)
    gone = time.monotonic()
    for gateway in gateways:
        wait_for(lambda: replica_names(gateway) == [], TTL_S + 3, "the worker dropped")
    assert time.monotonic() - gone < TTL_S + 3
    refused = chat(gateways[1])
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert "no replica" in refused.json()["error"]["message"]
