"""Which waiting request of a model gets the next free slot: priority classes with aging,
and weighted fair queuing by tokens between keys within a class.

Pure logic: no clock of its own (every call is given `now`), no asyncio, so tests drive it
with a fake clock.

Within a class it is start-time fair queuing over tokens: each key is a flow, each request
a packet of `cost` tokens (prompt + expected output). A request's start tag is the later of
the class's virtual time and its key's previous finish tag; its finish tag adds
`cost / weight`. The head with the smallest start tag is served next (ties: the key with
fewer requests running), and the class's virtual time moves to that start tag. A key that
sends 64 requests at once thus has them tagged one after another, while a key that arrives
later starts at the current virtual time: it is served after at most one of the other's
requests per slot, and each key gets its weight's share of tokens. Work-conserving: a free
slot is never left empty while anything waits that may take it.

Between classes the highest is served first, with aging: a request counts as having
arrived `aging_s` earlier for every class (CLASS_STEP) it stands above batch, so one of a
lower class is served before those of the next class up that arrived more than `aging_s`
after it, and is never starved.

`reserved_slots` are held back for requests of a class above `standard` and for keys below
their fair share of the other slots (a key with nothing running always is).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from modelport.admission.priority import CLASS_STEP, CLASSES, DEFAULT

# A request of a class above this one may take a reserved slot whatever its key runs.
_RESERVED_FOR_CLASS = DEFAULT
# Service time assumed before any request has finished (Retry-After of a full queue).
_FIRST_SERVICE_S = 1.0


class QueueFull(Exception):
    """The model's queue holds `queue_max` requests already."""


@dataclass(eq=False, slots=True)
class Ticket:
    """One request's place: its key (`flow`; "" for requests without a virtual key), class,
    token cost and its key's weight. `waiter` is the caller's to use (a future)."""

    flow: str
    priority: int = DEFAULT
    cost: float = 1.0
    weight: float = 1.0
    enqueued_at: float = 0.0
    dispatched_at: float | None = None
    start: float = 0.0
    seq: int = 0
    waiter: Any = None

    def queued_s(self) -> float:
        return 0.0 if self.dispatched_at is None else self.dispatched_at - self.enqueued_at


@dataclass
class _Class:
    """The waiting requests of one priority class: one FIFO per key, and the virtual
    clock of fair queuing."""

    virtual: float = 0.0
    flows: dict[str, deque[Ticket]] = field(default_factory=dict)
    count: int = 0

    def oldest(self) -> float:
        return min(queue[0].enqueued_at for queue in self.flows.values())


class FairQueue:
    """A model's slots and the requests waiting for them. The caller says how many slots
    the model has now (`capacity`, which follows its replicas), takes a place with `offer`
    (at once, or queued), gives it back with `finished`, and calls `dispatch` whenever a
    slot may have freed."""

    def __init__(self, queue_max: int = 64, reserved_slots: int = 0, aging_s: float = 30.0):
        self.queue_max = queue_max
        self.reserved_slots = reserved_slots
        self.aging_s = aging_s
        self.capacity = 1
        self.in_flight = 0
        self.length = 0
        self.running: dict[str, int] = {}  # requests running per key
        # Each key's last finish tag, per class: where its next request starts.
        self._finish: dict[tuple[int, str], float] = {}
        self._classes: dict[int, _Class] = {}
        self._seq = 0
        self._service_s = _FIRST_SERVICE_S  # moving average of a request's time in a slot

    # -- taking and giving back places ---------------------------------------------------

    def offer(self, ticket: Ticket, now: float) -> bool:
        """Whether `ticket` runs now; else it joins the queue (QueueFull when the queue is
        full), and the caller calls `dispatch`, which may start it or others. The common
        case, nothing waiting and a slot free, is decided here without queuing."""
        ticket.enqueued_at = now
        if self.length == 0 and self._may_take(ticket):
            self._tag(ticket)
            self._run(ticket, now)
            return True
        if self.length >= self.queue_max:
            raise QueueFull
        self._tag(ticket)
        self._seq += 1
        ticket.seq = self._seq
        waiting = self._classes.setdefault(ticket.priority, _Class())
        waiting.flows.setdefault(ticket.flow, deque()).append(ticket)
        waiting.count += 1
        self.length += 1
        return False

    def dispatch(self, now: float) -> list[Ticket]:
        """Fill free slots from the queue, best first; the tickets that now run."""
        started: list[Ticket] = []
        while self.length and self.in_flight < self.capacity:
            ticket = self._best(reserved_only=self._free() <= self._reserved())
            if ticket is None:
                break
            self._take_out(ticket)
            self._run(ticket, now)
            started.append(ticket)
        return started

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out (its request timed out or left); whether it was queued."""
        waiting = self._classes.get(ticket.priority)
        queue = waiting.flows.get(ticket.flow) if waiting else None
        if queue is None or ticket not in queue:
            return False
        self._take_out(ticket)
        # Its tokens were never served: the key's next request does not pay for them.
        key = (ticket.priority, ticket.flow)
        if key in self._finish:
            self._finish[key] -= ticket.cost / ticket.weight
        return True

    def finished(self, ticket: Ticket, now: float, actual_cost: float | None = None) -> None:
        """`ticket`'s request gave its slot back; `actual_cost` (tokens it really spent)
        settles what its key is charged for its next requests."""
        self.in_flight -= 1
        left = self.running.get(ticket.flow, 1) - 1
        if left:
            self.running[ticket.flow] = left
        else:
            self.running.pop(ticket.flow, None)
        if ticket.dispatched_at is not None:
            self._service_s += 0.1 * (now - ticket.dispatched_at - self._service_s)
        key = (ticket.priority, ticket.flow)
        if actual_cost is not None and key in self._finish:
            self._finish[key] += (actual_cost - ticket.cost) / ticket.weight
        self._forget_if_idle(ticket.priority, ticket.flow)

    # -- what is shown -------------------------------------------------------------------

    def oldest_wait_s(self, now: float) -> float:
        return max((now - waiting.oldest() for waiting in self._classes.values()
                    if waiting.count), default=0.0)

    def retry_after_s(self) -> int:
        """A guess at when a refused request would find room: the queue's length served
        at the model's recent pace."""
        per_slot = self.length / max(1, self.capacity)
        return max(1, round(per_slot * self._service_s))

    # -- inside ---------------------------------------------------------------------------

    def _free(self) -> int:
        return self.capacity - self.in_flight

    def _reserved(self) -> int:
        # At least one slot stays open to everyone, whatever was configured.
        return min(self.reserved_slots, self.capacity - 1)

    def _may_take(self, ticket: Ticket) -> bool:
        free = self._free()
        if free <= 0:
            return False
        return free > self._reserved() or self._privileged(ticket)

    def _privileged(self, ticket: Ticket) -> bool:
        """May take a reserved slot: a class above standard, or a key below its fair share
        of the unreserved slots."""
        if ticket.priority > _RESERVED_FOR_CLASS:
            return True
        flows = set(self.running)
        for waiting in self._classes.values():
            flows.update(flow for flow, queue in waiting.flows.items() if queue)
        flows.add(ticket.flow)
        share = (self.capacity - self._reserved()) / len(flows)
        return self.running.get(ticket.flow, 0) < share

    def _tag(self, ticket: Ticket) -> None:
        waiting = self._classes.get(ticket.priority)
        virtual = waiting.virtual if waiting else 0.0
        key = (ticket.priority, ticket.flow)
        ticket.start = max(virtual, self._finish.get(key, 0.0))
        self._finish[key] = ticket.start + ticket.cost / max(ticket.weight, 1e-9)

    def _best(self, reserved_only: bool) -> Ticket | None:
        """The head to serve next: the class standing highest (with aging), then the
        smallest start tag in it; with only reserved slots free, the best that may take one."""
        order = sorted((c for c in self._classes.items() if c[1].count),
                       key=lambda item: self._standing(item[0], item[1]))
        for _priority, waiting in order:
            heads = sorted((queue[0] for queue in waiting.flows.values() if queue),
                           key=lambda t: (t.start, self.running.get(t.flow, 0), t.seq))
            for head in heads:
                if not reserved_only or self._privileged(head):
                    return head
        return None

    def _standing(self, priority: int, waiting: _Class) -> tuple[float, int]:
        """Smallest first: when its oldest request arrived, moved earlier by `aging_s` per
        class. A class's request thus goes before those of a class one above that came
        more than `aging_s` after it: however busy the higher class, the requests ahead of
        a waiting one are finitely many, so it is never starved."""
        if not self.aging_s:
            return 0.0, -priority
        return waiting.oldest() - priority / CLASS_STEP * self.aging_s, -priority

    def _take_out(self, ticket: Ticket) -> None:
        waiting = self._classes[ticket.priority]
        queue = waiting.flows[ticket.flow]
        queue.remove(ticket)
        if not queue:
            del waiting.flows[ticket.flow]
        waiting.count -= 1
        self.length -= 1

    def _run(self, ticket: Ticket, now: float) -> None:
        ticket.dispatched_at = now
        self.in_flight += 1
        self.running[ticket.flow] = self.running.get(ticket.flow, 0) + 1
        waiting = self._classes.get(ticket.priority)
        if waiting is None:
            waiting = self._classes[ticket.priority] = _Class()
        waiting.virtual = max(waiting.virtual, ticket.start)

    def _forget_if_idle(self, priority: int, flow: str) -> None:
        """A key with nothing running or waiting whose tags the clock has passed needs no
        memory (keys come and go; the map must not grow with them). Classes stay: there
        are at most as many as priority numbers, and each keeps its virtual clock."""
        if flow in self.running:
            return
        waiting = self._classes.get(priority)
        if waiting is None or flow in waiting.flows:
            return
        key = (priority, flow)
        if self._finish.get(key, 0.0) <= waiting.virtual:
            self._finish.pop(key, None)


__all__ = ["CLASSES", "FairQueue", "QueueFull", "Ticket"]
