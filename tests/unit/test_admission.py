"""Admission (admission/threaded.py), the one primitive for work that waits for capacity:
bounded running count, bounded FIFO queue, 429 with Retry-After beyond both."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modelport.admission.threaded import Admission
from modelport.engines.batching import BatchQueue, Job
from modelport.errors import RateLimitError


def test_refuses_beyond_limit_plus_queue_with_retry_after():
    gate = Admission("m", limit=1, max_queue=1)
    first, second = object(), object()
    gate.join(first)
    assert gate.wait(first)
    gate.join(second)
    with pytest.raises(RateLimitError) as refused:
        gate.join(object())
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    assert "model 'm' is busy: 1 request(s) running and 1 waiting" in refused.value.message
    gate.release()
    assert gate.wait(second)
    assert gate.counts() == (1, 0)


def test_serves_the_queue_in_order_and_drops_cancelled_waiters():
    gate = Admission("m", limit=1, max_queue=3)
    running, leaving, next_in_line = object(), object(), object()
    for ticket in (running, leaving, next_in_line):
        gate.join(ticket)
    assert gate.wait(running)
    admitted = []
    waiter = threading.Thread(target=lambda: admitted.append(gate.wait(next_in_line)))
    waiter.start()
    assert gate.wait(leaving, is_cancelled=lambda: True) is False  # its client went away
    time.sleep(0.1)
    assert admitted == []  # the place is still taken
    gate.release()
    waiter.join(timeout=5)
    assert admitted == [True]
    assert gate.counts() == (1, 0)


def test_try_acquire_takes_a_free_place_but_never_jumps_the_queue():
    gate = Admission("m", limit=2, max_queue=2)
    assert gate.try_acquire()
    assert gate.running == 1
    gate.join("queued")  # a free place, but the queue is served first
    assert not gate.try_acquire()
    assert gate.take(5) == ["queued"]
    assert not gate.try_acquire()  # both places taken now
    gate.release(2)
    assert gate.counts() == (0, 0)


def test_acquire_gives_up_after_its_timeout_and_leaves_the_queue():
    gate = Admission("m", limit=1, max_queue=1)
    assert gate.acquire()
    started = time.monotonic()
    assert gate.acquire(timeout=0.2) is False
    assert 0.15 <= time.monotonic() - started < 2
    assert gate.counts() == (1, 0)


def test_a_larger_limit_lets_a_waiter_in():
    gate = Admission("m", limit=1, max_queue=1)
    assert gate.acquire()
    admitted = []
    waiter = threading.Thread(target=lambda: admitted.append(gate.acquire(timeout=5)))
    waiter.start()
    time.sleep(0.1)
    gate.limit = 2
    waiter.join(timeout=5)
    assert admitted == [True] and gate.counts() == (2, 0)


def test_the_batch_queue_refuses_beyond_its_admission_and_frees_places():
    async def scenario() -> None:
        release = threading.Event()

        def run(jobs: list[Job], settle) -> None:  # noqa: ANN001
            release.wait(5)
            for job in jobs:
                settle(job, len(job.inputs))

        queue = BatchQueue("m", run, gather=8, max_waiting=2, threads=None,
                           thread_name="test-admission")
        await queue.start()
        try:
            first = asyncio.create_task(queue.submit(Job(["a"])))
            second = asyncio.create_task(queue.submit(Job(["b", "c"])))
            await asyncio.sleep(0.05)
            assert queue.admission.counts() == (2, 0)
            with pytest.raises(RateLimitError):
                await queue.submit(Job(["d"]))
            release.set()
            assert await first == 1 and await second == 2
            assert queue.admission.counts() == (0, 0)
        finally:
            await queue.stop()

    asyncio.run(scenario())
