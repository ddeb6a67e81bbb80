"""Admission for engines: a worker's requests waiting for a slot of its engine.

At most `limit` requests run at once; up to `max_queue` more wait, first come first served;
beyond that a request is refused at once with a 429 that says when to retry (a queue that
only grows helps nobody: the client can go elsewhere or come back). The counting, the bound
and the order are the FairQueue's (admission/fair_queue.py), with every request of one flow;
this adapter gives it a lock, so that the event loop (`try_acquire`, `join`, `release`: a
moment each, never blocking) and engine threads (`acquire`/`wait`, which block until their
turn) share it. A batch loop takes what may run with `take` instead of waiting per request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modelport.admission.fair_queue import FairQueue, QueueFull, Ticket
from modelport.errors import RateLimitError

RETRY_AFTER_SECONDS = 1
# How often a queued waiter re-checks whether it was cancelled (its client went away).
_POLL_SECONDS = 0.05
_FLOW = ""  # one flow: the requests of one worker are served in the order they came


class Admission:
    def __init__(self, name: str, limit: int, max_queue: int = 0,
                 retry_after_s: int = RETRY_AFTER_SECONDS) -> None:
        self.name = name
        self.retry_after_s = retry_after_s
        self._condition = threading.Condition()
        self._line = FairQueue(queue_max=max_queue, aging_s=0.0)
        self._line.capacity = limit
        self._places: dict[int, tuple[Any, Ticket]] = {}  # id(ticket) -> (ticket, place), waiting
        # Tickets already running that their caller has not collected yet (`wait`, `take`),
        # and the places of everything running, given back oldest first.
        self._ready: deque[Any] = deque()
        self._running: deque[Ticket] = deque()

    # -- counts ------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._line.capacity

    @limit.setter
    def limit(self, limit: int) -> None:
        with self._condition:
            self._line.capacity = limit
            self._dispatch()  # a larger limit lets waiters in

    @property
    def max_queue(self) -> int:
        return self._line.queue_max

    @property
    def running(self) -> int:
        return self._line.in_flight

    @property
    def waiting(self) -> int:
        return self._line.length

    def counts(self) -> tuple[int, int]:
        with self._condition:
            return self._line.in_flight, self._line.length

    def refusal(self) -> RateLimitError:
        line = self._line
        return RateLimitError(
            f"model '{self.name}' is busy: {line.in_flight} request(s) running and "
            f"{line.length} waiting (limit {line.capacity}, queue {line.queue_max}); "
            f"retry in {self.retry_after_s}s",
            headers={"Retry-After": str(self.retry_after_s)})

    # -- taking and giving back places ---------------------------------------------------

    def try_acquire(self) -> bool:
        """A running place now, if one is free and nobody waits before us."""
        with self._condition:
            line = self._line
            if line.length or line.in_flight >= line.capacity:
                return False
            place = Ticket(_FLOW)
            line.offer(place, time.monotonic())
            self._running.append(place)
            return True

    def acquire(self, ticket: Any = None, timeout: float | None = None,
                is_cancelled: Callable[[], bool] | None = None) -> bool:
        """Join the queue (RateLimitError when it is full) and block until this request
        runs: True; False when it was cancelled or `timeout` passed while it waited."""
        ticket = object() if ticket is None else ticket
        self.join(ticket)
        return self.wait(ticket, timeout, is_cancelled)

    def join(self, ticket: Any) -> None:
        """Queue `ticket` (it may run at once), or refuse it when `limit + max_queue` are
        already in."""
        with self._condition:
            place = Ticket(_FLOW)
            try:
                runs = self._line.offer(place, time.monotonic())
            except QueueFull:
                raise self.refusal() from None
            if runs:
                self._running.append(place)
                self._ready.append(ticket)
            else:
                self._places[id(ticket)] = (ticket, place)

    def wait(self, ticket: Any, timeout: float | None = None,
             is_cancelled: Callable[[], bool] | None = None) -> bool:
        """Block until the queued `ticket` runs (True), or leave the queue when it is
        cancelled or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not any(ready is ticket for ready in self._ready):
                late = deadline is not None and time.monotonic() >= deadline
                if late or (is_cancelled is not None and is_cancelled()):
                    _, place = self._places.pop(id(ticket))
                    self._line.withdraw(place)
                    self._dispatch()
                    return False
                self._condition.wait(_POLL_SECONDS)
            self._ready = deque(ready for ready in self._ready if ready is not ticket)
            return True

    def take(self, count: int) -> list[Any]:
        """Up to `count` tickets that may run now, oldest first (a batch loop)."""
        with self._condition:
            self._dispatch()
            taken = [self._ready.popleft() for _ in range(min(max(count, 0), len(self._ready)))]
            return taken

    def drop_waiting(self, should_drop: Callable[[Any], bool]) -> list[Any]:
        """Remove the queued tickets that `should_drop` picks (cancelled ones)."""
        with self._condition:
            dropped = [ticket for ticket, _ in self._places.values() if should_drop(ticket)]
            for ticket in dropped:
                self._line.withdraw(self._places.pop(id(ticket))[1])
            if dropped:
                self._dispatch()
            return dropped

    def release(self, count: int = 1) -> None:
        with self._condition:
            now = time.monotonic()
            for _ in range(count):
                self._line.finished(self._running.popleft(), now)
            self._dispatch()

    def _dispatch(self) -> None:
        """Start what may run now (under the lock): its callers find it in `_ready`."""
        started = self._line.dispatch(time.monotonic())
        if started:
            waiting = {id(place): key for key, (_, place) in self._places.items()}
            for place in started:  # in the order they start
                ticket, _ = self._places.pop(waiting[id(place)])
                self._running.append(place)
                self._ready.append(ticket)
        self._condition.notify_all()
