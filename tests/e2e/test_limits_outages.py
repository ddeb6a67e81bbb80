"""Key limits while their Redis fails, end to end: a real gateway in front of the real
SmolLM2 model, a real redis-server killed, restarted empty and stopped (SIGSTOP) under
load. Limited keys are never answered with a 5xx, the gateway says once when the outage
starts and once when it ends, and a budget spent before Redis lost its data stays spent
(it is rebuilt from the usage rows)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from support.models import SMOLLM2
from support.redis_server import RedisServer
from support.server import ModelportServer, wait_for

MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
MODEL = "smollm2"
UNREACHABLE = "is unreachable"
BACK = "key limits are shared again"


class Cluster:
    """One gateway and the Redis it counts in, which tests kill and start again."""

    def __init__(self, workdir) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.gateway = ModelportServer(
            {"server": {"master_key": "${E2E_MASTER}", "redis_url": self.redis.url},
             "models": [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2,
                         "context_length": 2048, "parallel": 8}]},
            workdir, env={"E2E_MASTER": MASTER, "MODELPORT_DATA_DIR": str(workdir)})

    def restart_redis_empty(self) -> None:
        self.redis.stop()
        self.redis = RedisServer(self.workdir, port=self.redis.port)

    def redis_health(self) -> str:
        return self.gateway.health()["redis"]

    def log_lines(self, text: str) -> int:
        return self.gateway.log_path.read_text(errors="replace").count(text)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("outages"))
    cluster.gateway.start()
    yield cluster
    cluster.gateway.stop()
    os.kill(cluster.redis.process.pid, signal.SIGCONT)  # in case a test left it stopped
    cluster.redis.stop()


def create_key(gateway: ModelportServer, **limits) -> str:
    response = httpx.post(gateway.url + "/admin/keys", headers=ADMIN, timeout=30,
                          json={"name": "outage", **limits})
    assert response.status_code == 201, response.text
    return response.json()["key"]


def chat(gateway: ModelportServer, secret: str, max_tokens: int = 2) -> httpx.Response:
    return httpx.post(gateway.base_url + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": MODEL, "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": "Hi"}]})


class Load:
    """Clients sending requests of one key in a loop: every status and the longest wait."""

    def __init__(self, gateway: ModelportServer, secret: str, clients: int = 4) -> None:
        self.statuses: list[int] = []
        self.longest_s = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(gateway, secret))
                         for _ in range(clients)]

    def _loop(self, gateway: ModelportServer, secret: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status = chat(gateway, secret).status_code
            self.longest_s = max(self.longest_s, time.monotonic() - started)
            self.statuses.append(status)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_redis_killed_then_stopped_under_load_never_gives_a_5xx(cluster):
    gateway = cluster.gateway
    secret = create_key(gateway, rpm=100_000, tpm=10_000_000, max_parallel=64,
                        budget_tokens=10_000_000, budget_period="month")
    assert cluster.redis_health() == "ok"
    with Load(gateway, secret) as load:
        time.sleep(1.5)
        cluster.redis.process.kill()  # SIGKILL: connections refused from now on
        cluster.redis.process.wait(10)
        wait_for(lambda: cluster.redis_health() == "degraded", 5, "degraded")
        time.sleep(2)
        cluster.restart_redis_empty()
        wait_for(lambda: cluster.redis_health() == "ok", 5, "ok again")
        time.sleep(1)
        os.kill(cluster.redis.process.pid, signal.SIGSTOP)  # connections hang from now on
        try:
            wait_for(lambda: cluster.redis_health() == "degraded", 5, "degraded when stopped")
            time.sleep(2)
        finally:
            os.kill(cluster.redis.process.pid, signal.SIGCONT)
        wait_for(lambda: cluster.redis_health() == "ok", 5, "ok after SIGCONT")
        time.sleep(1)
    assert len(load.statuses) > 20
    assert [s for s in load.statuses if s >= 500] == []
    assert set(load.statuses) == {200}
    # Nobody waited on the dead Redis (one call is bounded at 100 ms).
    assert load.longest_s < 3.0, load.longest_s
    # One line when each outage starts, one when it ends; no traceback per request.
    assert cluster.log_lines(UNREACHABLE) == 2
    assert cluster.log_lines(BACK) == 2
    assert cluster.log_lines("Traceback") == 0


def test_redis_restarted_empty_renews_no_budget(cluster):
    gateway = cluster.gateway
    secret = create_key(gateway, budget_tokens=400, budget_period="total")
    answered = 0
    while (refused := chat(gateway, secret, max_tokens=50)).status_code == 200:
        answered += 1
    assert answered >= 1
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "budget_exhausted"
    time.sleep(1.5)  # the usage rows are written in batches, every second
    cluster.restart_redis_empty()
    wait_for(lambda: cluster.redis_health() == "ok", 5, "ok after the restart")
    again = chat(gateway, secret, max_tokens=50)
    assert again.status_code == 403, again.text
    assert again.json()["error"]["code"] == "budget_exhausted"
