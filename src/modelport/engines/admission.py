"""Admission: the one primitive for work that waits for capacity.

At most `limit` requests run at once; up to `max_queue` more wait in FIFO order; beyond
that a request is refused at once with a 429 that says when to retry (a queue that only
grows helps nobody: the client can go elsewhere or come back). The counts are readable
at any time for metrics and /health.

It is thread-safe and never blocks the event loop: `try_acquire`, `join` and `release`
only take a lock for a moment, so the gateway and the engines' event loops call them
directly, while an engine thread may block in `acquire`/`wait` until its turn. A batch
loop takes the head of the queue with `take` instead of waiting per request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modelport.errors import RateLimitError

RETRY_AFTER_SECONDS = 1
# How often a queued waiter re-checks whether it was cancelled (its client went away).
_POLL_SECONDS = 0.05


class Admission:
    def __init__(self, name: str, limit: int, max_queue: int = 0,
                 retry_after_s: int = RETRY_AFTER_SECONDS) -> None:
        self.name = name
        self._limit = limit
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._condition = threading.Condition()
        self._running = 0
        self._queue: deque[Any] = deque()

    # -- counts ------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        with self._condition:
            self._limit = limit
            self._condition.notify_all()  # a larger limit lets waiters in

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def counts(self) -> tuple[int, int]:
        with self._condition:
            return self._running, len(self._queue)

    def refusal(self) -> RateLimitError:
        return RateLimitError(
            f"model '{self.name}' is busy: {self._running} request(s) running and "
            f"{len(self._queue)} waiting (limit {self._limit}, queue {self.max_queue}); "
            f"retry in {self.retry_after_s}s",
            headers={"Retry-After": str(self.retry_after_s)})

    # -- taking and giving back places ---------------------------------------------------

    def try_acquire(self) -> bool:
        """A running place now, if one is free and nobody waits before us."""
        with self._condition:
            if self._running < self._limit and not self._queue:
                self._running += 1
                return True
            return False

    def acquire(self, ticket: Any = None, timeout: float | None = None,
                is_cancelled: Callable[[], bool] | None = None) -> bool:
        """Join the queue (RateLimitError when it is full) and block until this request
        runs: True; False when it was cancelled or `timeout` passed while it waited."""
        ticket = object() if ticket is None else ticket
        self.join(ticket)
        return self.wait(ticket, timeout, is_cancelled)

    def join(self, ticket: Any) -> None:
        """Queue `ticket`, or refuse it at once when `limit + max_queue` are already in."""
        with self._condition:
            if self._running + len(self._queue) >= self._limit + self.max_queue:
                raise self.refusal()
            self._queue.append(ticket)

    def wait(self, ticket: Any, timeout: float | None = None,
             is_cancelled: Callable[[], bool] | None = None) -> bool:
        """Block until the queued `ticket` runs (True), or leave the queue when it is
        cancelled or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not (self._queue[0] is ticket and self._running < self._limit):
                late = deadline is not None and time.monotonic() >= deadline
                if late or (is_cancelled is not None and is_cancelled()):
                    self._queue.remove(ticket)
                    self._condition.notify_all()
                    return False
                self._condition.wait(_POLL_SECONDS)
            self._queue.popleft()
            self._running += 1
            self._condition.notify_all()
            return True

    def take(self, count: int) -> list[Any]:
        """Up to `count` tickets from the head of the queue, now running (a batch loop)."""
        with self._condition:
            taken = [self._queue.popleft() for _ in range(min(max(count, 0), len(self._queue)))]
            self._running += len(taken)
            return taken

    def drop_waiting(self, should_drop: Callable[[Any], bool]) -> list[Any]:
        """Remove the queued tickets that `should_drop` picks (cancelled ones)."""
        with self._condition:
            dropped = [ticket for ticket in self._queue if should_drop(ticket)]
            for ticket in dropped:
                self._queue.remove(ticket)
            if dropped:
                self._condition.notify_all()
            return dropped

    def release(self, count: int = 1) -> None:
        with self._condition:
            self._running -= count
            self._condition.notify_all()
