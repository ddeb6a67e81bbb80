"""How a model's replicas are ordered for one request: pure functions over their load.

Each strategy returns every replica it was given, best first; the relay tries them in
that order, so a replica that fails before the first byte is followed by the next one.
Nothing here reads a clock, a random source or a socket: the caller passes the turn
counter, the random draw and the replica a conversation was last served by, so each
strategy is tested on plain values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, TypeVar

STRATEGIES = ("least_busy", "round_robin", "weighted", "prefix_affinity")


class ReplicaLoad(Protocol):
    """What a strategy reads of a replica."""

    @property
    def name(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def remote_in_flight(self) -> int: ...  # through other gateways (shared state)
    @property
    def capacity(self) -> int: ...  # requests it runs at once
    @property
    def weight(self) -> float: ...


R = TypeVar("R", bound=ReplicaLoad)


def _load(replica: ReplicaLoad) -> int:
    """Requests in flight on the replica through every gateway (this one's own count,
    plus what the others sharing its Redis published last)."""
    return replica.in_flight + replica.remote_in_flight


def _busyness(replica: ReplicaLoad) -> float:
    return _load(replica) / max(replica.capacity, 1)


def _rotated(replicas: Sequence[R], turn: int) -> list[R]:
    if not replicas:
        return []
    start = turn % len(replicas)
    return [*replicas[start:], *replicas[:start]]


def least_busy(replicas: Sequence[R], turn: int = 0) -> list[R]:
    """Fewest requests in flight (through every gateway) relative to capacity first.
    Equally busy replicas take turns (the sort is stable over a rotation), so an idle
    pair is not always entered through its first member."""
    return sorted(_rotated(replicas, turn), key=_busyness)


def round_robin(replicas: Sequence[R], turn: int) -> list[R]:
    """Each replica first in turn, whatever its load."""
    return _rotated(replicas, turn)


def weighted(replicas: Sequence[R], draw: float) -> list[R]:
    """One replica chosen with probability proportional to its weight (`draw` is uniform in
    [0, 1)); the others follow, least busy first. Replicas of weight 0 are chosen only
    when every weight is 0."""
    if not replicas:
        return []
    total = sum(max(r.weight, 0.0) for r in replicas)
    if total <= 0:
        chosen = replicas[min(int(draw * len(replicas)), len(replicas) - 1)]
    else:
        point, chosen = draw * total, replicas[-1]
        for replica in replicas:
            point -= max(replica.weight, 0.0)
            if point < 0:
                chosen = replica
                break
    return [chosen, *least_busy([r for r in replicas if r is not chosen])]


def prefix_affinity(replicas: Sequence[R], previous: str | None, margin: int,
                    turn: int = 0) -> list[R]:
    """The replica that served this conversation's prefix last, so its prefix cache
    answers; unless it has more than `margin` requests in flight beyond the least busy
    replica, then the least busy order."""
    ordered = least_busy(replicas, turn)
    if previous is None or not ordered:
        return ordered
    sticky = next((r for r in ordered if r.name == previous), None)
    if sticky is None or _load(sticky) - _load(ordered[0]) > margin:
        return ordered
    return [sticky, *(r for r in ordered if r is not sticky)]


class AffinityTable:
    """Conversation prefix -> the replica that served it last, for the most recent
    `size` prefixes (oldest forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._served: OrderedDict[str, str] = OrderedDict()

    def last(self, prefix: str | None) -> str | None:
        if prefix is None:
            return None
        replica = self._served.get(prefix)
        if replica is not None:
            self._served.move_to_end(prefix)
        return replica

    def remember(self, prefix: str | None, replica: str) -> None:
        if prefix is None:
            return
        self._served[prefix] = replica
        self._served.move_to_end(prefix)
        while len(self._served) > self._size:
            self._served.popitem(last=False)

    def forget_replica(self, replica: str) -> None:
        """Drop every prefix a removed replica served (its cache is gone with it)."""
        for prefix in [p for p, r in self._served.items() if r == replica]:
            del self._served[prefix]

    def __len__(self) -> int:
        return len(self._served)

