"""Remote workers registering in a real Redis, and gateways' directories seeing them."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelport.errors import ConfigError
from modelport.workers.registration import (
    KEY_PREFIX,
    Registration,
    RemoteWorker,
    WorkerDirectory,
    check_advertised_url,
)


def run(coroutine):
    return asyncio.run(coroutine)


async def _until(predicate, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_two_directories_see_a_worker_join_and_leave_on_stop(redis_server):
    async def scenario():
        seen: list[list[dict]] = [[], []]
        directories = [WorkerDirectory(redis_server.url, seen[i].append, interval_s=0.2)
                       for i in range(2)]
        for directory in directories:
            await directory.start()
        worker = RemoteWorker(model="reg-a", url="http://10.1.2.3:8001/v1", capacity=4,
                              engine="llamacpp")
        registration = Registration(redis_server.url, worker, ttl_s=3)
        try:
            await registration.start()
            await _until(lambda: all(d.workers for d in directories))
            for directory in directories:
                assert list(directory.workers.values()) == [worker]
            await registration.stop()
            await _until(lambda: not any(d.workers for d in directories), timeout=2)
        finally:
            for directory in directories:
                await directory.stop()
        return seen

    seen = run(scenario())
    for changes in seen:
        assert [len(workers) for workers in changes] == [1, 0]


def test_a_worker_that_stops_its_heartbeat_is_dropped_within_its_ttl(redis_server):
    async def scenario():
        directory = WorkerDirectory(redis_server.url, lambda workers: None, interval_s=0.2)
        await directory.start()
        worker = RemoteWorker(model="reg-b", url="http://10.1.2.4:8001/v1")
        registration = Registration(redis_server.url, worker, ttl_s=2)
        try:
            await registration.start()
            await _until(lambda: bool(directory.workers))
            await asyncio.sleep(2.5)  # heartbeats keep it past its TTL
            assert list(directory.workers.values()) == [worker]
            registration._task.cancel()  # a killed worker: no heartbeat, no goodbye
            await asyncio.gather(registration._task, return_exceptions=True)
            return await _until(lambda: not directory.workers, timeout=6)
        finally:
            await registration._redis.aclose()
            await directory.stop()

    assert run(scenario()) <= 2 + 0.2 + 0.5


def test_entries_that_are_not_workers_are_ignored(redis_server):
    async def scenario():
        import redis.asyncio as redis

        client = redis.from_url(redis_server.url)
        await client.set(KEY_PREFIX + "junk:1", b"not json", px=5000)
        await client.set(KEY_PREFIX + "junk:2", b'{"model": "x", "url": "ftp://x"}', px=5000)
        await client.set(KEY_PREFIX + "junk:3", b'{"url": "http://x/v1"}', px=5000)
        directory = WorkerDirectory(redis_server.url, lambda workers: None)
        directory._redis = redis.from_url(redis_server.url)
        try:
            return await directory.read()
        finally:
            await directory._redis.aclose()
            await client.delete(KEY_PREFIX + "junk:1", KEY_PREFIX + "junk:2",
                                KEY_PREFIX + "junk:3")
            await client.aclose()

    assert run(scenario()) == {}


def test_registering_without_a_reachable_redis_is_a_clear_error():
    worker = RemoteWorker(model="reg-c", url="http://10.1.2.5:8001/v1")
    with pytest.raises(ConfigError, match=r"could not register in Redis at redis://\*\*\*@"):
        run(Registration("redis://user:secret@127.0.0.1:1/0", worker).start())


@pytest.mark.parametrize("url, expected", [
    ("http://10.0.0.5:8001/v1", "http://10.0.0.5:8001/v1"),
    ("http://10.0.0.5:8001/", "http://10.0.0.5:8001/v1"),
    ("https://gpu-box.lan:9000", "https://gpu-box.lan:9000/v1"),
])
def test_advertised_urls_are_normalised(url, expected):
    assert check_advertised_url(url) == expected


@pytest.mark.parametrize("url", ["10.0.0.5:8001", "http://0.0.0.0:8001/v1", "http://[::]:8001/v1"])
def test_advertised_urls_others_cannot_reach_are_refused(url):
    with pytest.raises(ConfigError, match="--advertise"):
        check_advertised_url(url)
