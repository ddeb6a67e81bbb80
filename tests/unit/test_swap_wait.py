"""swap_max_wait_s: a load that needs the room of models with requests running or queued
waits while those are served, up to swap_max_wait_s, then unloads them anyway without
cutting a request (running ones finish, queued ones go on to wait for the next load);
and reload costs, measured at each load, order the evictions."""

from __future__ import annotations

import asyncio

import pytest

from modelport.admission.fair_queue import Ticket
from modelport.config import parse_config
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.registry import ModelRegistry
from modelport.workers.on_demand import ModelLoader, NoRoomToLoadError
from support.models import SMOLLM2 as GGUF
from support.stand_in_supervisor import StandInSupervisor


def setup(models=({"name": "a"}, {"name": "b"}), supervisor=None, **server):
    config = parse_config({"server": {"max_loaded": 1, **server}, "models": [
        {"engine": "llamacpp", "path": GGUF, "load": "on_demand", "parallel": 1, **m}
        for m in models]})
    registry = ModelRegistry([Deployment(m, "http://127.0.0.1:9/v1", 8, load="on_demand",
                                         status=DeploymentStatus.UNLOADED)
                              for m in config.models])
    supervisor = supervisor or StandInSupervisor()
    loader = ModelLoader(registry, supervisor, lambda: config.server,
                         lambda: config.models_dir_path())
    return loader, supervisor, registry


async def release_after(deployment: Deployment, replica, seconds: float) -> float:
    await asyncio.sleep(seconds)
    deployment.release(replica)
    return asyncio.get_running_loop().time()


def test_a_load_waits_for_the_busy_model_to_finish_then_evicts_it():
    async def go():
        loader, supervisor, registry = setup(swap_max_wait_s=5)
        a, b = registry.get("a"), registry.get("b")
        await loader.ensure_loaded(a)
        replica = a.acquire()
        clock = asyncio.get_running_loop().time
        started = clock()
        released = asyncio.ensure_future(release_after(a, replica, 0.3))
        await loader.ensure_loaded(b)
        return clock() - started, await released - started, supervisor.halted
    waited, released_at, halted = asyncio.run(go())
    assert halted == ["a"]
    assert released_at <= waited < 2.0  # it went as soon as a's request ended, not at 5 s


def test_past_swap_max_wait_the_busy_model_is_unloaded_once_its_requests_finish():
    async def go():
        loader, supervisor, registry = setup(swap_max_wait_s=0.2)
        a, b = registry.get("a"), registry.get("b")
        await loader.ensure_loaded(a)
        replica = a.acquire()
        clock = asyncio.get_running_loop().time
        started = clock()
        loading = asyncio.ensure_future(loader.ensure_loaded(b))
        await asyncio.sleep(0.5)
        draining = (a.status, a.in_flight, list(supervisor.halted))
        a.release(replica)  # its running request ends normally
        await loading
        return draining, clock() - started, supervisor.halted, b.status
    draining, waited, halted, b_status = asyncio.run(go())
    # Past 0.2 s a is on its way out, but its request runs on: nothing is cut.
    assert draining == (DeploymentStatus.UNLOADING, 1, [])
    assert halted == ["a"] and b_status is DeploymentStatus.READY and waited >= 0.5


def test_the_evicted_models_queued_requests_go_on_to_wait_for_its_next_load():
    async def go():
        loader, _, registry = setup(swap_max_wait_s=0.1)
        a, b = registry.get("a"), registry.get("b")
        await loader.ensure_loaded(a)
        running = Ticket("k")
        assert a.queue.try_take(running)
        replica = a.acquire()
        queued = Ticket("k")
        assert not a.queue.try_take(queued)
        waiting = asyncio.ensure_future(a.queue.wait(queued))
        loading = asyncio.ensure_future(loader.ensure_loaded(b))
        await asyncio.sleep(0.4)
        released = waiting.done() and waiting.exception() is None
        a.release(replica)
        a.queue.give_back(running)
        await loading
        return released, a.status
    released, a_status = asyncio.run(go())
    assert released  # not left to time out in a queue whose model is leaving
    assert a_status is DeploymentStatus.UNLOADED


def test_without_swap_max_wait_a_load_that_needs_a_busy_model_is_refused_at_once():
    async def go():
        loader, supervisor, registry = setup()
        a = registry.get("a")
        await loader.ensure_loaded(a)
        a.acquire()
        clock = asyncio.get_running_loop().time
        started = clock()
        with pytest.raises(NoRoomToLoadError):
            await loader.ensure_loaded(registry.get("b"))
        return clock() - started, supervisor.halted
    refused_after, halted = asyncio.run(go())
    assert refused_after < 0.1 and halted == []


def test_a_models_own_swap_max_wait_overrides_the_servers():
    async def go():
        loader, _, registry = setup(({"name": "a"}, {"name": "b", "swap_max_wait_s": 0.1}),
                                    swap_max_wait_s=30)
        a, b = registry.get("a"), registry.get("b")
        await loader.ensure_loaded(a)
        replica = a.acquire()
        clock = asyncio.get_running_loop().time
        started = clock()
        loading = asyncio.ensure_future(loader.ensure_loaded(b))
        await asyncio.sleep(0.3)
        a.release(replica)
        await loading
        return clock() - started
    assert asyncio.run(go()) < 2.0


def test_the_cheaper_to_reload_of_two_idle_models_goes_first():
    async def go():
        loader, supervisor, registry = setup(
            ({"name": "dear"}, {"name": "cheap"}, {"name": "new"}), max_loaded=2)
        supervisor.load_s = 0.4
        await loader.ensure_loaded(registry.get("dear"))
        supervisor.load_s = 0.05
        await loader.ensure_loaded(registry.get("cheap"))
        # Both used just now (cheap the most recently: LRU alone would evict dear).
        registry.get("dear").release(registry.get("dear").acquire())
        registry.get("cheap").release(registry.get("cheap").acquire())
        await loader.ensure_loaded(registry.get("new"))
        return supervisor.halted, loader.footprints.reload_s(registry.get("dear"))
    halted, dear_reload_s = asyncio.run(go())
    assert halted == ["cheap"] and dear_reload_s >= 0.4


def test_the_time_a_model_in_the_way_spends_loading_does_not_count_as_its_turn():
    async def go():
        loader, _, registry = setup(supervisor=StandInSupervisor(load_s=0.3),
                                    swap_max_wait_s=0.2)
        a, b = registry.get("a"), registry.get("b")
        clock = asyncio.get_running_loop().time
        started = clock()
        loading_a = asyncio.ensure_future(loader.ensure_loaded(a))
        await asyncio.sleep(0.05)  # a is loading when b asks for the room
        await loader.ensure_loaded(b)
        await loading_a
        return clock() - started
    # a's load (0.3 s), then a's 0.2 s to serve, then b's load (0.3 s); counting a's load
    # as its turn would have unloaded a as soon as it was ready (0.6 s in all).
    assert asyncio.run(go()) >= 0.75
