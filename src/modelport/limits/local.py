"""Key limits counted in this process (the default: limits hold per gateway).

Nothing here waits on I/O once a key's budget is seeded, so the counts live in plain
objects: each key's current minute holds its requests and tokens, the key's requests in
flight and its budget period's tokens are objects the minutes share. A finished request
settles into the minute and period it was admitted in, whatever the clock says by then.
This runs on every request of a limited key; it does a few attribute updates where a
store of named, expiring counters did dozens of calls. Its checks and reservations are
one plain function with no await in it, so on the event loop no other admission can come
between a check and its reservation.

`share` > 1 makes this process count its part of limits that several gateways share
(limits.shared falls back to it while Redis is away): each limit divided by the number of
gateways, a budget's remainder when it was read from the usage store too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelport.limits import admission as limits
from modelport.limits.admission import LimitedKey, RawHeaders, TokensUsed


@dataclass(slots=True)
class _Running:
    count: int = 0  # the key's requests in flight


@dataclass(slots=True)
class _Budget:
    """Tokens a key used in one budget period."""

    since: dt.datetime
    end: float | None  # when the period ends (None: never)
    used: int = 0  # settled
    held: int = 0  # reserved by requests in flight
    base: int = 0  # what the usage store said when seeded
    seeded: bool = False  # from the usage store, once
    seeding: asyncio.Future | None = None


@dataclass(slots=True)
class _Minute:
    """One key's counts in one UTC minute."""

    minute: int
    period: str  # the key's budget_period then (a PATCH may change it)
    running: _Running
    budget: _Budget | None
    requests: int = 0
    tokens: int = 0  # used, and reserved by requests in flight


@dataclass(slots=True)
class LocalAdmission:
    key: LimitedKey
    raw_headers: RawHeaders
    _minute: _Minute
    _holds_slot: bool
    _reserved: int
    _settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return limits.as_dict(self.raw_headers)

    def settle_now(self, tokens: int | None) -> bool:
        """Count the tokens the answer really used in place of its reservation, and give
        the parallel slot back."""
        if self._settled:
            return True
        self._settled = True
        minute = self._minute
        if self._holds_slot and minute.running.count > 0:
            minute.running.count -= 1
        tokens = tokens or 0
        if tokens != self._reserved:
            minute.tokens = max(0, minute.tokens + tokens - self._reserved)
        budget = minute.budget
        if budget is not None:
            budget.held = max(0, budget.held - self._reserved)
            budget.used += tokens
        return True

    async def settle(self, tokens: int | None) -> None:
        self.settle_now(tokens)


class LocalKeyLimiter:
    _MAX_KEYS = 100_000  # keys seen since the last clear-out (per-minute state is small)

    def __init__(self, tokens_used: TokensUsed | None = None,
                 clock: Callable[[], float] = time.time, share: int = 1) -> None:
        self._tokens_used = tokens_used
        self._clock = clock
        self._share = max(1, share)
        self._periods = limits.BudgetPeriods()
        self._minutes: dict[str, _Minute] = {}  # key id -> its current minute
        self._running: dict[str, _Running] = {}
        # (key id, budget counter name) -> the period's tokens
        self._budgets: dict[tuple[str, str], _Budget] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def admit(self, key: LimitedKey, reserve: int = 0) -> LocalAdmission:
        while (held := self.admit_now(key, reserve)) is None:
            minute = self._minutes.get(key.id)  # made by admit_now (unless cleared since)
            if minute is not None and minute.budget is not None:
                await self._seed(key, minute.budget)
        return held

    def admit_now(self, key: LimitedKey, reserve: int = 0) -> LocalAdmission | None:
        """`admit` without waiting; None when the key's budget must first be read from the
        usage store (then `admit` waits for it). Every request of a limited key comes here,
        so it is one plain function: no coroutine, no awaits."""
        now = self._clock()
        minute_no = int(now // limits.MINUTE_S)
        minute = self._minutes.get(key.id)
        if (minute is None or minute.minute != minute_no or minute.period != key.budget_period
                or (minute.budget is None) != (key.budget_tokens is None)):
            minute = self._new_minute(key, minute_no, now)
        minute_left = limits.MINUTE_S - now % limits.MINUTE_S
        budget = minute.budget
        share = self._share
        if budget is not None:
            if not budget.seeded:
                return None
            limit: int = key.budget_tokens  # type: ignore[assignment]
            if share > 1:
                limit = budget.base + max(0, limit - budget.base) // share
            _check_budget(key, limit, budget, reserve,
                          None if budget.end is None else budget.end - now)
        tpm, rpm, parallel = key.tpm, key.rpm, key.max_parallel
        if share > 1:
            tpm, rpm, parallel = _part(tpm, share), _part(rpm, share), _part(parallel, share)
        if tpm is not None:
            if reserve > tpm:
                raise limits.reserve_above_tpm(key, reserve)
            if minute.tokens + reserve > tpm:
                raise limits.tpm_spent(key, minute.tokens, minute_left,
                                       minute.requests if rpm else 0)
        if rpm is not None and minute.requests >= rpm:
            raise limits.rpm_spent(key, minute.requests, minute_left, minute.tokens)
        holds_slot = parallel is not None
        if holds_slot:
            running = minute.running
            if running.count >= parallel:  # type: ignore[operator]
                raise limits.parallel_full(key, running.count)
            running.count += 1
        minute.requests += 1
        minute.tokens += reserve
        if budget is not None:
            budget.held += reserve
        return LocalAdmission(key, limits.raw_headers(key, minute_left, minute.requests,
                                                      minute.tokens), minute, holds_slot,
                              reserve)

    def _new_minute(self, key: LimitedKey, minute_no: int, now: float) -> _Minute:
        if len(self._minutes) > self._MAX_KEYS:
            self._forget_idle()
        running = self._running.get(key.id)
        if running is None:
            running = self._running[key.id] = _Running()
        budget = None
        if key.budget_tokens is not None:
            name, since, end = self._periods.of(key, now)
            budget = self._budgets.get((key.id, name))
            if budget is None:
                budget = self._budgets[(key.id, name)] = _Budget(since, end)
        minute = self._minutes[key.id] = _Minute(minute_no, key.budget_period, running, budget)
        return minute

    def _forget_idle(self) -> None:
        """Let go of keys with nothing in flight (their minute and period start again the
        next time; a budget is seeded again from the usage store)."""
        idle = [key_id for key_id, running in self._running.items() if running.count == 0]
        for key_id in idle:
            del self._running[key_id]
            self._minutes.pop(key_id, None)
        self._budgets = {held: budget for held, budget in self._budgets.items()
                         if held[0] in self._running}

    async def _seed(self, key: LimitedKey, budget: _Budget) -> None:
        """Start a budget from what the usage store holds: the first request of a burst
        asks, the others wait for its answer."""
        if self._tokens_used is None:
            budget.seeded = True
            return
        if budget.seeding is None:
            budget.seeding = asyncio.ensure_future(self._read_used(key, budget))
        await asyncio.shield(budget.seeding)

    async def _read_used(self, key: LimitedKey, budget: _Budget) -> None:
        assert self._tokens_used is not None
        try:
            budget.base = await limits.used_before(self._tokens_used, key, budget.since)
            budget.used += budget.base
            budget.seeded = True
        finally:
            budget.seeding = None


def _check_budget(key: LimitedKey, limit: int, budget: _Budget, reserve: int,
                  seconds_left: float | None) -> None:
    if budget.used >= limit:
        raise limits.budget_spent(key, budget.used, seconds_left)
    if budget.used + reserve > limit:
        raise limits.budget_short(key, budget.used, reserve, seconds_left)
    if budget.used + budget.held + reserve > limit:
        raise limits.budget_held(key, budget.held, reserve)


def _part(limit: int | None, share: int) -> int | None:
    """This process's part of a limit several gateways share: at least one request."""
    return None if limit is None else max(1, limit // share)
