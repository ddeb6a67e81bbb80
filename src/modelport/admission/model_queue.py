"""A model's queue in the gateway: requests beyond its running slots wait here, in the
fair queue's order, instead of piling up in the worker's own first-come queue.

A request takes a place with `try_take` (the common case: a slot is free and nobody
waits, decided without awaiting anything), else waits with `wait`; the place is given back
with `give_back` once its answer has been relayed, which dispatches the next request. A
model with no slot known to be serving (loading, restarting, waiting for a replica) does
not queue here: its request goes on to be answered for its state as before.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelport.errors import RateLimitError
from modelport.admission.fair_queue import FairQueue, QueueFull, Ticket

# How often a waiting request looks again at its model's slots, which can grow without a
# request finishing (a replica becoming ready, a reload raising `parallel`).
_RECHECK_S = 1.0


@dataclass(frozen=True)
class QueueSettings:
    queue_max: int = 64
    queue_timeout_s: float = 60.0
    reserved_slots: int = 0
    aging_s: float = 30.0


class ModelQueue:
    """`capacity` says how many requests the model runs at once right now."""

    def __init__(self, name: str, capacity: Callable[[], int], settings: QueueSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._capacity = capacity
        self._clock = clock
        self.queue = FairQueue()
        self.settings = settings
        self.configure(settings)
        self.waited_s_total = 0.0  # over every request that queued (the /metrics counter)
        self.queued_total = 0
        self.refused_total = 0

    def configure(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.queue.queue_max = settings.queue_max
        self.queue.reserved_slots = settings.reserved_slots
        self.queue.aging_s = settings.aging_s

    def try_take(self, ticket: Ticket) -> bool:
        """Whether the request may go on at once (a slot, or a model this queue does not
        gate now); False: it must `wait`. 429 when the queue is full."""
        queue = self.queue
        queue.capacity = capacity = self._capacity()
        if capacity <= 0:
            return True  # not counted: nothing is known to be serving it
        try:
            if queue.offer(ticket, self._clock()):
                return True
        except QueueFull:
            self.refused_total += 1
            raise RateLimitError(
                f"model '{self.name}' has {queue.length} requests waiting, its queue_max; "
                "retry later", code="queue_full",
                headers={"Retry-After": str(queue.retry_after_s())}) from None
        self._dispatch()  # a slot may be free for it (or for a request of a higher class)
        return ticket.dispatched_at is not None

    async def wait(self, ticket: Ticket) -> None:
        """Until the queued `ticket` is dispatched; 429 with Retry-After when it waited
        `queue_timeout_s`. A request that leaves (cancelled) gives back what it held."""
        loop = asyncio.get_running_loop()
        waiter = ticket.waiter = loop.create_future()
        self.queued_total += 1
        deadline = ticket.enqueued_at + self.settings.queue_timeout_s
        try:
            while not waiter.done():
                left = deadline - self._clock()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), min(left, _RECHECK_S))
                except TimeoutError:
                    self._dispatch()
        except BaseException:
            if not self.queue.withdraw(ticket):
                self.give_back(ticket)  # dispatched as it left: the slot goes on
            raise
        if ticket.dispatched_at is not None:
            self.waited_s_total += ticket.queued_s()
            return
        self.queue.withdraw(ticket)
        self.refused_total += 1
        raise RateLimitError(
            f"model '{self.name}': the request waited {self.settings.queue_timeout_s:g}s in "
            "its queue (queue_timeout_s) without a free slot; retry later",
            code="queue_timeout", headers={"Retry-After": str(self.queue.retry_after_s())})

    def give_back(self, ticket: Ticket, actual_cost: float | None = None) -> None:
        """The request's slot is free again (its answer ended); the next one is dispatched."""
        if ticket.dispatched_at is None or ticket.waiter is _GIVEN_BACK:
            return  # never held a slot here, or already given back
        ticket.waiter = _GIVEN_BACK
        self.queue.finished(ticket, self._clock(), actual_cost)
        if self.queue.length:
            self._dispatch()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self.queue.length

    def release_waiting(self) -> None:
        """Its model is leaving (unloaded): the waiting requests go on now, to wait for its
        next load, rather than for slots that will not free."""
        queue = self.queue
        if not queue.length:
            return
        queue.capacity = queue.in_flight + queue.length + queue.reserved_slots
        _wake(queue.dispatch(self._clock()))

    def _dispatch(self) -> None:
        self.queue.capacity = self._capacity()
        _wake(self.queue.dispatch(self._clock()))

    def view(self) -> dict[str, Any]:
        """What /health, /admin/models and `modelport models` show of the queue."""
        queue = self.queue
        queue.capacity = self._capacity()  # shown as it is now, not as the last request saw it
        return {"length": queue.length, "oldest_wait_s": round(queue.oldest_wait_s(self._clock()), 3),
                "running": queue.in_flight, "slots": queue.capacity,
                "queue_max": queue.queue_max, "reserved_slots": queue.reserved_slots}


_GIVEN_BACK: Any = object()


def _wake(tickets: list[Ticket]) -> None:
    """The dispatched tickets' requests go on."""
    for ticket in tickets:
        if ticket.waiter is not None and not ticket.waiter.done():
            ticket.waiter.set_result(None)


def queue_ms(ticket: Ticket | None) -> str | None:
    """The x-modelport-queue-ms of a request that waited in a queue (None: it did not)."""
    if ticket is None or ticket.dispatched_at is None or ticket.dispatched_at == ticket.enqueued_at:
        return None
    return str(math.ceil(ticket.queued_s() * 1000))


__all__ = ["ModelQueue", "QueueSettings", "Ticket", "queue_ms"]
