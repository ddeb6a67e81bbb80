"""Key limits under concurrency, end to end: a real gateway counting in a real redis-server
in front of the real SmolLM2 model, bursts of 16 and 50 requests sent at once against each
limit; what the key spent (its usage rows) never passes the limit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from support.models import SMOLLM2
from support.redis_server import RedisServer
from support.server import ModelportServer, wait_inside_a_minute

MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
MODEL = "smollm2"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-limits"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, redis):
    workdir = tmp_path_factory.mktemp("limits")
    server = ModelportServer(
        {"server": {"master_key": "${E2E_MASTER}", "redis_url": redis.url},
         "models": [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2,
                     "context_length": 2048, "parallel": 8}]},
        workdir, env={"E2E_MASTER": MASTER, "MODELPORT_DATA_DIR": str(workdir)})
    server.start()
    yield server
    server.stop()


def create_key(server: ModelportServer, **limits) -> tuple[str, str]:
    response = httpx.post(server.url + "/admin/keys", headers=ADMIN, timeout=30,
                          json={"name": "burst", **limits})
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["id"]


def burst(server: ModelportServer, secret: str, count: int, max_tokens: int,
          stream: bool = False) -> list[tuple[int, dict, tuple[float, float] | None]]:
    """`count` chat requests sent at once: each one's status, error body and, for a stream
    that was answered, when its first and last bytes came."""
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": "Count from one to fifty."}]}

    async def one(client: httpx.AsyncClient):
        async with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, response.json(), None
            first = None
            async for _ in response.aiter_bytes():
                first = first or time.monotonic()
            return 200, {}, (first, time.monotonic())

    async def everyone():
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {secret}"}) as client:
            return await asyncio.gather(*(one(client) for _ in range(count)))

    return asyncio.run(everyone())


def spent(server: ModelportServer, key_id: str, requests: int) -> int:
    """The key's tokens in its usage rows, once all `requests` rows are written."""
    deadline = time.monotonic() + 20
    while True:
        rows = httpx.get(server.url + "/admin/usage?group_by=key", headers=ADMIN,
                         timeout=10).json()["data"]
        row = next((r for r in rows if r["key"] == key_id), None)
        if row is not None and row["requests"] >= requests:
            return row["prompt_tokens"] + row["completion_tokens"]
        assert time.monotonic() < deadline, f"usage rows not written: {row}"
        time.sleep(0.25)


def refusals(results, codes: set[str]) -> None:
    """Every request was answered or refused by the limit, none failed."""
    for status, payload, _ in results:
        assert status == 200 or status in (403, 429) and payload["error"]["code"] in codes, \
            (status, payload)


@pytest.mark.parametrize("concurrent", [16, 50])
def test_a_burst_never_spends_past_the_budget(gateway, concurrent):
    secret, key_id = create_key(gateway, budget_tokens=600, budget_period="total")
    results = burst(gateway, secret, concurrent, max_tokens=100)
    refusals(results, {"budget_reserved", "budget_exhausted"})
    assert sum(status == 200 for status, _, _ in results) >= 1
    assert spent(gateway, key_id, concurrent) <= 600
    # Later requests are admitted while the budget holds them, and refused once it cannot.
    while (status := burst(gateway, secret, 1, max_tokens=100)[0][0]) == 200:
        pass
    assert status == 403
    assert spent(gateway, key_id, concurrent + 1) <= 600


@pytest.mark.parametrize("concurrent", [16, 50])
def test_a_burst_never_spends_past_tpm(gateway, concurrent):
    secret, key_id = create_key(gateway, tpm=700)
    wait_inside_a_minute(30)
    results = burst(gateway, secret, concurrent, max_tokens=60)
    refusals(results, {"tpm_exceeded"})
    assert sum(status == 200 for status, _, _ in results) >= 1
    assert spent(gateway, key_id, concurrent) <= 700


@pytest.mark.parametrize("concurrent", [16, 50])
def test_a_burst_gets_exactly_rpm_requests(gateway, concurrent):
    secret, _ = create_key(gateway, rpm=5)
    wait_inside_a_minute(30)
    results = burst(gateway, secret, concurrent, max_tokens=4)
    refusals(results, {"rpm_exceeded"})
    assert sum(status == 200 for status, _, _ in results) == 5


@pytest.mark.parametrize("concurrent", [16, 50])
def test_a_burst_never_runs_more_than_max_parallel(gateway, concurrent):
    secret, _ = create_key(gateway, max_parallel=3)
    results = burst(gateway, secret, concurrent, max_tokens=40, stream=True)
    refusals(results, {"max_parallel_exceeded"})
    spans = [span for _, _, span in results if span is not None]
    assert len(spans) >= 3
    # Each answered stream held its slot from before its first byte to after its last.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                   key=lambda edge: (edge[0], edge[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 3
