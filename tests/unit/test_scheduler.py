"""The scheduler's order, with a fake clock: fair share by tokens between keys (Jain's
index), priority classes, aging, work conservation, reserved slots, and a full or timed-out
queue answered 429 with Retry-After."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from modelport.errors import InvalidRequestError, RateLimitError
from modelport.admission.fair_queue import FairQueue, QueueFull, Ticket
from modelport.admission.priority import CLASSES, granted, parse_priority
from modelport.admission.model_queue import ModelQueue, QueueSettings, queue_ms

BATCH, STANDARD, INTERACTIVE = CLASSES["batch"], CLASSES["standard"], CLASSES["interactive"]


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


class Simulation:
    """Slots that serve a request for cost / `tokens_per_s` seconds; flows keep `backlog`
    requests waiting; what each flow was served is counted in tokens."""

    def __init__(self, queue: FairQueue, tokens_per_s: float = 100.0) -> None:
        self.queue = queue
        self.rate = tokens_per_s
        self.now = 0.0
        self.events: list[tuple[float, int, Ticket]] = []
        self.served: dict[str, float] = {}
        self.idle_while_waiting = 0.0
        self._n = 0

    def submit(self, ticket: Ticket) -> bool:
        if self.queue.offer(ticket, self.now):
            self._start(ticket)
            return True
        for started in self.queue.dispatch(self.now):
            self._start(started)
        return ticket.dispatched_at is not None

    def _start(self, ticket: Ticket) -> None:
        self._n += 1
        heapq.heappush(self.events, (self.now + ticket.cost / self.rate, self._n, ticket))

    def run_until(self, end: float, refill=None) -> None:
        while self.events and self.events[0][0] <= end:
            at, _, ticket = heapq.heappop(self.events)
            if self.queue.length and self.queue.in_flight < self.queue.capacity:
                self.idle_while_waiting += at - self.now
            self.now = at
            self.served[ticket.flow] = self.served.get(ticket.flow, 0.0) + ticket.cost
            self.queue.finished(ticket, self.now)
            if refill is not None:
                refill(ticket)
            for started in self.queue.dispatch(self.now):
                self._start(started)


def flood(sim: Simulation, flow: str, cost: float, count: int, weight: float = 1.0,
          priority: int = STANDARD) -> list[Ticket]:
    tickets = [Ticket(flow, priority, cost, weight) for _ in range(count)]
    for ticket in tickets:
        sim.submit(ticket)
    return tickets


def keep_backlogged(sim: Simulation, costs: dict[str, float], weights: dict[str, float]):
    def refill(done: Ticket) -> None:
        sim.submit(Ticket(done.flow, done.priority, costs[done.flow], weights[done.flow]))
    return refill


def test_tokens_are_shared_fairly_between_keys_with_unequal_demand():
    # Four keys, each always backlogged, with requests of 50, 200, 400 and 1,600 tokens: a
    # request-count scheduler would give the last one 32x the first one's tokens.
    queue = FairQueue(queue_max=1000)
    queue.capacity = 2
    sim = Simulation(queue)
    costs = {"a": 50.0, "b": 200.0, "c": 400.0, "d": 1600.0}
    weights = dict.fromkeys(costs, 1.0)
    for flow, cost in costs.items():
        flood(sim, flow, cost, 8)
    sim.run_until(600.0, keep_backlogged(sim, costs, weights))
    served = [sim.served[flow] for flow in costs]
    assert jain(served) >= 0.98, served
    assert sim.idle_while_waiting == 0.0


def test_weights_give_proportional_shares():
    queue = FairQueue(queue_max=1000)
    queue.capacity = 2
    sim = Simulation(queue)
    costs = {"light": 100.0, "heavy": 100.0}
    weights = {"light": 1.0, "heavy": 3.0}
    for flow in costs:
        flood(sim, flow, costs[flow], 8, weights[flow])
    sim.run_until(400.0, keep_backlogged(sim, costs, weights))
    ratio = sim.served["heavy"] / sim.served["light"]
    assert 2.7 <= ratio <= 3.3, sim.served


def test_one_active_key_gets_every_slot():
    queue = FairQueue(queue_max=100)
    queue.capacity = 4
    sim = Simulation(queue)
    tickets = flood(sim, "alone", 100.0, 20)
    assert queue.in_flight == 4 and queue.length == 16
    sim.run_until(1000.0)
    assert all(t.dispatched_at is not None for t in tickets)
    assert sim.idle_while_waiting == 0.0
    assert sim.now == pytest.approx(5.0)  # 20 requests of 1 s on 4 slots


def test_a_newcomer_waits_for_one_slot_not_behind_a_flood():
    queue = FairQueue(queue_max=100)
    queue.capacity = 2
    sim = Simulation(queue)
    flood(sim, "a", 500.0, 32)
    sim.run_until(12.0)  # the flood has been running a while
    newcomer = Ticket("b", STANDARD, 500.0)
    assert not sim.submit(newcomer)
    before = sim.now
    sim.run_until(sim.now + 5.0)  # one of a's requests takes 5 s
    assert newcomer.dispatched_at is not None
    assert newcomer.dispatched_at - before <= 5.0


def test_interactive_behind_32_batch_requests_is_dispatched_next():
    queue = FairQueue(queue_max=100)
    queue.capacity = 2
    sim = Simulation(queue)
    flood(sim, "a", 100.0, 1, priority=BATCH)
    flood(sim, "a", 300.0, 1, priority=BATCH)  # the two running end at different times
    flood(sim, "a", 100.0, 32, priority=BATCH)
    person = Ticket("b", INTERACTIVE, 100.0)
    assert not sim.submit(person)
    at, _, first_done = sim.events[0]
    sim.run_until(at)
    started = [t for _, _, t in sim.events]
    assert person in started and person.dispatched_at == at
    assert queue.length == 32  # no batch request went before it


def test_priority_of_the_same_key_is_ordered_by_class():
    queue = FairQueue(queue_max=100)
    queue.capacity = 1
    sim = Simulation(queue)
    sim.submit(Ticket("k", STANDARD, 100.0))
    order = [Ticket("k", p, 100.0) for p in (BATCH, STANDARD, INTERACTIVE, 15)]
    for ticket in order:
        sim.submit(ticket)
    sim.run_until(100.0)
    by_start = sorted(order, key=lambda t: t.dispatched_at)
    assert [t.priority for t in by_start] == [INTERACTIVE, 15, STANDARD, BATCH]


@pytest.mark.parametrize("arrivals, latest", [(1, 24.0), (2, 45.0)])
def test_aging_never_starves_a_lower_class(arrivals, latest):
    # Interactive requests keep the one slot busy (one more per one served: a steady
    # backlog; two more: ever more of them). The batch request still runs once the
    # interactive ones that came before two aging periods after it (batch -> interactive)
    # are served.
    queue = FairQueue(queue_max=1000, aging_s=10.0)
    queue.capacity = 1
    sim = Simulation(queue)
    costs, weights = {"person": 100.0}, {"person": 1.0}
    flood(sim, "person", 100.0, 3, priority=INTERACTIVE)
    starved = Ticket("script", BATCH, 100.0)
    sim.submit(starved)

    def refill(done: Ticket) -> None:
        if done.flow == "person":
            for _ in range(arrivals):
                sim.submit(Ticket("person", INTERACTIVE, costs["person"], weights["person"]))

    sim.run_until(60.0, refill)
    assert starved.dispatched_at is not None
    assert 20.0 <= starved.dispatched_at <= latest


def test_reserved_slot_is_held_for_a_key_below_its_share():
    queue = FairQueue(queue_max=100, reserved_slots=1)
    queue.capacity = 3
    sim = Simulation(queue)
    flood(sim, "script", 1000.0, 10)
    assert queue.in_flight == 2  # the third slot is held back
    person = Ticket("person", STANDARD, 100.0)
    assert sim.submit(person)  # at once: nothing of its key runs
    assert person.dispatched_at == 0.0
    second = Ticket("person", STANDARD, 100.0)
    assert not sim.submit(second)  # its key holds its share now


def test_reserved_slot_goes_to_a_higher_class():
    queue = FairQueue(queue_max=100, reserved_slots=1)
    queue.capacity = 2
    sim = Simulation(queue)
    flood(sim, "script", 1000.0, 5)
    flood(sim, "person", 1000.0, 1)  # person's share of the one unreserved slot: 1/2
    assert queue.in_flight == 2
    sim.queue.capacity = 3
    late = Ticket("script", INTERACTIVE, 100.0)
    assert sim.submit(late)


def test_a_full_queue_refuses():
    queue = FairQueue(queue_max=2)
    queue.capacity = 1
    assert queue.offer(Ticket("a"), 0.0)
    assert not queue.offer(Ticket("a"), 0.0)
    assert not queue.offer(Ticket("a"), 0.0)
    with pytest.raises(QueueFull):
        queue.offer(Ticket("a"), 0.0)


def test_a_withdrawn_request_does_not_charge_its_key():
    queue = FairQueue(queue_max=10)
    queue.capacity = 1
    queue.offer(Ticket("x", cost=100.0), 0.0)
    gone = Ticket("a", cost=1000.0)
    queue.offer(gone, 0.0)
    assert queue.withdraw(gone)
    again = Ticket("a", cost=100.0)
    queue.offer(again, 1.0)
    assert again.start == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_model_queue_full_is_429_with_retry_after():
    clock = FakeClock()
    queue = ModelQueue("m", lambda: 1, QueueSettings(queue_max=1), clock)
    assert queue.try_take(Ticket("a"))
    assert not queue.try_take(Ticket("a"))
    with pytest.raises(RateLimitError) as raised:
        queue.try_take(Ticket("a"))
    assert raised.value.status == 429 and raised.value.code == "queue_full"
    assert int(raised.value.headers["Retry-After"]) >= 1


def test_model_queue_timeout_is_429_with_retry_after():
    async def scenario() -> None:
        clock = FakeClock()
        queue = ModelQueue("m", lambda: 1, QueueSettings(queue_timeout_s=5.0), clock)
        assert queue.try_take(Ticket("a"))
        waiting = Ticket("b")
        assert not queue.try_take(waiting)
        task = asyncio.ensure_future(queue.wait(waiting))
        await asyncio.sleep(0)
        clock.now += 6.0  # the wait re-checks its deadline at least once a second
        with pytest.raises(RateLimitError) as raised:
            await asyncio.wait_for(task, 3.0)
        assert raised.value.code == "queue_timeout"
        assert "Retry-After" in raised.value.headers
        assert queue.queue.length == 0
    asyncio.run(scenario())


def test_model_queue_dispatches_on_give_back_and_says_how_long_it_waited():
    async def scenario() -> None:
        clock = FakeClock()
        queue = ModelQueue("m", lambda: 1, QueueSettings(), clock)
        first = Ticket("a")
        assert queue.try_take(first) and queue_ms(first) is None
        second = Ticket("b")
        assert not queue.try_take(second)
        task = asyncio.ensure_future(queue.wait(second))
        await asyncio.sleep(0)
        assert queue.view()["length"] == 1
        clock.now += 0.25
        assert queue.view()["oldest_wait_s"] == 0.25
        queue.give_back(first)
        await asyncio.wait_for(task, 1.0)
        assert queue_ms(second) == "250"
        queue.give_back(second)
        queue.give_back(second)  # twice is once
        assert queue.queue.in_flight == 0
    asyncio.run(scenario())


def test_a_request_that_leaves_the_queue_holds_nothing():
    async def scenario() -> None:
        queue = ModelQueue("m", lambda: 1, QueueSettings(), FakeClock())
        first = Ticket("a")
        queue.try_take(first)
        leaving = Ticket("b")
        queue.try_take(leaving)
        task = asyncio.ensure_future(queue.wait(leaving))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue.queue.length == 0
        queue.give_back(first)
        assert queue.queue.in_flight == 0
    asyncio.run(scenario())


def test_a_model_with_no_serving_slot_is_not_queued():
    queue = ModelQueue("m", lambda: 0, QueueSettings(queue_max=0), FakeClock())
    ticket = Ticket("a")
    assert queue.try_take(ticket)
    queue.give_back(ticket)
    assert queue.queue.in_flight == 0


def test_priorities_parse_and_a_request_never_rises_above_its_key():
    assert parse_priority("interactive") == INTERACTIVE
    assert parse_priority(" Batch ") == BATCH
    assert parse_priority(15) == parse_priority("15") == 15
    for bad in ("urgent", -1, 101, True, 2.5, None):
        with pytest.raises(InvalidRequestError):
            parse_priority(bad)
    assert granted(None, None) == STANDARD
    assert granted(None, BATCH) == BATCH
    assert granted(INTERACTIVE, BATCH) == BATCH
    assert granted(BATCH, INTERACTIVE) == BATCH


def test_what_a_request_really_spent_settles_its_keys_next_place():
    queue = FairQueue(queue_max=10)
    queue.capacity = 2
    asked_much = Ticket("a", cost=1000.0)
    assert queue.offer(asked_much, 0.0)
    busy = Ticket("x", cost=100.0)
    assert queue.offer(busy, 0.0)
    queue.finished(asked_much, 1.0, actual_cost=10.0)  # max_tokens 1000, answered in 10
    assert queue.offer(Ticket("y", cost=100.0), 1.0)  # the slot is taken again
    following = Ticket("a", cost=100.0)
    assert not queue.offer(following, 1.0)
    assert following.start == 10.0  # not 1000: the key pays for what it used
