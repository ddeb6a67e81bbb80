"""Key limits counted in a Redis every gateway shares (`server.redis_url`), so one key's
limits hold across all of them. Each admission is one atomic Redis script (check every
limit, then reserve), so two gateways can never both take a window's last request or the
last tokens of a budget.

Budgets are money: their counters start from the usage rows (the source of truth), and a
counter that is missing (Redis restarted empty, a new period) is rebuilt from them before
anything is admitted against it. Rate windows simply start fresh.

Redis away (down, stopped, or slower than the bound of each call): the limiter logs one
line and counts in this process instead (limits.local, each limit divided by the gateways
last seen), or refuses with 503 (`on_outage="deny"`), until a probe finds Redis again and
one more line says so. Requests never wait on it and never fail with a 500.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelport.errors import ModelportError
from modelport.limits import admission as limits
from modelport.limits import counters as outcomes
from modelport.limits.admission import MINUTE_S, WINDOW_SLACK_S, LimitedKey, RawHeaders, TokensUsed
from modelport.limits.counters import CountersUnavailable, Names, RedisCounters
from modelport.limits.local import LocalKeyLimiter

logger = logging.getLogger("modelport.gateway")

SLOT_EXPIRY_S = 3600  # a slot or reservation held by a gateway that died is not released
HEARTBEAT_S = 2.0  # how often this gateway says it is alive (and checks on Redis)
PROBE_S = 0.5  # how often Redis is tried while it is away
SEEN_S = 10  # a gateway not heard from for this long no longer shares the limits


class LimitsUnavailableError(ModelportError):
    """Redis is away and `limits_on_outage: deny` says not to count limits without it."""

    status = 503
    type = "service_unavailable"
    code = "limits_unavailable"


@dataclass(slots=True)
class _KeyWindow:
    """One key's counter names for one minute, worked out once per key and minute."""

    minute: int
    period: str  # the key's budget_period when worked out (a PATCH may change it)
    has_budget: bool
    names: Names
    budget_since: dt.datetime | None
    budget_end: float | None  # when the budget period ends (None: never)


@dataclass(slots=True)
class SharedAdmission:
    """One admitted request: its rate-limit headers, and `settle` to run when it is done."""

    key: LimitedKey
    raw_headers: RawHeaders
    _limiter: "SharedKeyLimiter"
    _window: _KeyWindow
    _holds_slot: bool
    _reserved: int
    _settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return limits.as_dict(self.raw_headers)

    def settle_now(self, tokens: int | None) -> bool:
        return self._settled  # settling talks to Redis: the caller schedules `settle`

    async def settle(self, tokens: int | None) -> None:
        """Count the tokens the answer really used in place of its reservation, and give
        the parallel slot back."""
        if self._settled:
            return
        self._settled = True
        self._limiter._release(self)
        await self._limiter._settle(self, tokens or 0)


class SharedKeyLimiter:
    def __init__(self, counters: RedisCounters, tokens_used: TokensUsed | None = None,
                 clock: Callable[[], float] = time.time, on_outage: str = "local") -> None:
        self._counters = counters
        self._tokens_used = tokens_used
        self._clock = clock
        self._on_outage = on_outage
        self._where = counters.where  # named in the outage log lines
        self._periods = limits.BudgetPeriods()
        # Budget counters being rebuilt now: the requests that arrive meanwhile wait for
        # the one query instead of each asking the usage store.
        self._seeding: dict[str, asyncio.Future] = {}
        self._key_windows: dict[str, _KeyWindow] = {}
        self._gateway = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._gateways = 1  # gateways sharing the limits, as last seen
        self._outage_since: float | None = None
        self._fallback: LocalKeyLimiter | None = None
        self._watch: asyncio.Task | None = None
        # Per key: what this process's admitted, unsettled requests reserved of its budget.
        self._in_flight: dict[str, int] = {}
        # Per (key, start of its budget period): the budget's used and held tokens as last
        # counted, what a count afresh falls back on while the usage store cannot answer.
        self._last_counted: dict[tuple[str, dt.datetime], int] = {}
        self._unknown: set[str] = set()  # keys refused for want of a count, said once

    @property
    def degraded(self) -> bool:
        """Redis is away: limits count per process (or are refused)."""
        return self._outage_since is not None

    async def start(self) -> None:
        try:
            await self._counters.warm()
        except CountersUnavailable as error:  # a gateway may start while Redis is away
            self._outage_begins(error)
        self._watch = asyncio.get_running_loop().create_task(self._watch_redis())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._counters.close()

    def admit_now(self, key: LimitedKey, reserve: int = 0) -> None:
        return None  # every admission here asks Redis (or, in an outage, the fallback)

    async def admit(self, key: LimitedKey, reserve: int = 0):  # noqa: ANN201
        if self._outage_since is None:
            try:
                return await self._admit_shared(key, reserve)
            except CountersUnavailable as error:
                self._outage_begins(error)
        if self._fallback is None:
            raise LimitsUnavailableError(
                "key limits cannot be counted now (their shared store is unreachable); "
                "retry shortly", headers={"Retry-After": "1"})
        return await self._fallback.admit(key, reserve)

    async def _admit_shared(self, key: LimitedKey, reserve: int) -> SharedAdmission:
        now, minute, minute_left = limits.minute_of(self._clock)
        window = self._window(key, minute, now)
        seconds_left = None if window.budget_end is None else window.budget_end - now
        args = (key.budget_tokens, key.tpm, key.rpm, key.max_parallel)
        budget, tpm, rpm, parallel = (outcomes.NO_LIMIT if a is None else a for a in args)
        for _ in range(3):
            outcome, first, second, *counted = await self._counters.admit(
                window.names, reserve, budget, tpm, rpm, parallel, MINUTE_S + WINDOW_SLACK_S,
                SLOT_EXPIRY_S)
            if outcome != outcomes.BUDGET_MISSING:
                break
            await self._rebuild_budget(key, window, seconds_left)
        if outcome == outcomes.ADMITTED:
            if window.has_budget:
                self._remember(key.id, window.budget_since, counted[0] + reserve)
                if reserve:
                    self._in_flight[key.id] = self._in_flight.get(key.id, 0) + reserve
            return SharedAdmission(key, limits.raw_headers(key, minute_left, first, second),
                                   self, window, key.max_parallel is not None, reserve)
        raise _refusal(key, outcome, first, second, reserve, minute_left, seconds_left)

    def _window(self, key: LimitedKey, minute: int, now: float) -> _KeyWindow:
        """The key's counter names this minute (budget periods only change at midnight)."""
        window = self._key_windows.get(key.id)
        has_budget = key.budget_tokens is not None
        if (window is not None and window.minute == minute and window.has_budget == has_budget
                and window.period == key.budget_period):
            return window
        budget = since = end = None
        if has_budget:
            budget, since, end = self._periods.of(key, now)
        if len(self._key_windows) > 100_000:
            self._key_windows.clear()
        window = self._key_windows[key.id] = _KeyWindow(
            minute, key.budget_period, has_budget, self._counters.names(key.id, minute, budget),
            since, end)
        return window

    async def _rebuild_budget(self, key: LimitedKey, window: _KeyWindow,
                              seconds_left: float | None) -> None:
        """Start a missing budget counter from the usage rows; another gateway may have
        started it meanwhile, and its count stands."""
        name = window.names.budget_used
        pending = self._seeding.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return
        pending = self._seeding[name] = asyncio.get_running_loop().create_future()
        try:
            used = 0
            if self._tokens_used is not None:
                assert window.budget_since is not None
                used = await self._used_here(key.id, window.budget_since)
            # A period that ends keeps its counter a little longer; "total" never ends.
            await self._counters.seed(name, used, int(seconds_left) + WINDOW_SLACK_S
                                      if seconds_left else 0)
            pending.set_result(None)
        except BaseException as error:
            pending.set_exception(error)
            pending.exception()  # retrieved: the waiters get it, nobody else must
            raise
        finally:
            del self._seeding[name]

    async def _used_here(self, key_id: str, since: dt.datetime) -> int:
        """What the usage store says the key used, plus what this process's requests in
        flight reserved: a budget counted afresh while they run (Redis restarted empty, or
        counting in process during an outage) must not let others spend their tokens too.
        Other gateways' requests in flight then are not known here."""
        assert self._tokens_used is not None
        try:
            used = await self._tokens_used(key_id, since) + self._in_flight.get(key_id, 0)
        except Exception as error:  # noqa: BLE001
            # Counting from zero could spend a budget twice: fall back on the last count
            # seen here, else refuse until the store answers.
            known = self._last_counted.get((key_id, since))
            if known is None:
                if key_id not in self._unknown:  # one line per key, not one per request
                    self._unknown.add(key_id)
                    logger.warning("could not read the tokens key %s used: its requests "
                                   "wait until the usage store answers: %s: %s", key_id,
                                   type(error).__name__, error)
                raise limits.BudgetUnknownError(
                    "this key's token budget cannot be counted now (its usage store does not "
                    "answer); retry shortly", headers={"Retry-After": "2"}) from None
            logger.warning("could not read the tokens key %s used: counting on from the "
                           "%d last counted here: %s: %s", key_id, known,
                           type(error).__name__, error)
            return known
        self._unknown.discard(key_id)
        self._remember(key_id, since, used)
        return used

    def _remember(self, key_id: str, since: dt.datetime | None, counted: int) -> None:
        if since is None:
            return
        if len(self._last_counted) > 100_000:
            self._last_counted.clear()
        self._last_counted[(key_id, since)] = counted

    def _release(self, admission: SharedAdmission) -> None:
        if not (admission._window.has_budget and admission._reserved):
            return
        key_id = admission.key.id
        left = self._in_flight.get(key_id, 0) - admission._reserved
        if left > 0:
            self._in_flight[key_id] = left
        else:
            self._in_flight.pop(key_id, None)

    async def _settle(self, admission: SharedAdmission, tokens: int) -> None:
        """The tokens count in the minute and budget period the request was admitted in.
        Redis away: what it held expires there, and the usage row still counts the
        tokens for the budget when its counter is rebuilt."""
        key = admission.key
        try:
            await self._counters.settle(
                admission._window.names, tokens, admission._reserved,
                admission._window.has_budget, key.tpm is not None, admission._holds_slot)
        except CountersUnavailable as error:
            self._outage_begins(error)

    # --- outages ----------------------------------------------------------------------------

    def _outage_begins(self, error: CountersUnavailable) -> None:
        if self._outage_since is not None:
            return
        self._outage_since = time.monotonic()
        if self._on_outage == "deny":
            self._fallback = None
            how = "requests of keys with limits are refused with 503 until it is back"
        else:
            self._fallback = LocalKeyLimiter(
                self._used_here if self._tokens_used is not None else None, self._clock,
                share=self._gateways)
            how = (f"key limits count in this process, each divided by the {self._gateways} "
                   "gateway(s) last seen, until it is back")
        logger.warning("%s is unreachable (%s): %s", self._where, error, how)

    def _outage_ends(self) -> None:
        assert self._outage_since is not None
        took = time.monotonic() - self._outage_since
        self._outage_since = None
        self._fallback = None
        logger.warning("%s is back after %.1f s: key limits are shared again", self._where,
                       took)

    async def _watch_redis(self) -> None:
        """Say this gateway is alive (the others divide limits by the gateways seen), which
        also finds an outage while no request comes, and its end."""
        while True:
            try:
                self._gateways = max(1, await self._counters.heartbeat(
                    self._gateway, self._clock(), SEEN_S))
                if self._outage_since is not None:
                    self._outage_ends()
            except CountersUnavailable as error:
                self._outage_begins(error)
            await asyncio.sleep(HEARTBEAT_S if self._outage_since is None else PROBE_S)


def _refusal(key: LimitedKey, outcome: int, first: int, second: int, reserve: int,
             minute_left: float, seconds_left: float | None) -> Exception:
    if outcome == outcomes.BUDGET_SPENT:
        return limits.budget_spent(key, first, seconds_left)
    if outcome == outcomes.BUDGET_SHORT:
        return limits.budget_short(key, first, reserve, seconds_left)
    if outcome == outcomes.BUDGET_HELD:
        return limits.budget_held(key, second, reserve)
    if outcome == outcomes.RESERVE_ABOVE_TPM:
        return limits.reserve_above_tpm(key, reserve)
    if outcome == outcomes.TPM_SPENT:
        return limits.tpm_spent(key, first, minute_left, second if key.rpm else 0)
    if outcome == outcomes.RPM_SPENT:
        return limits.rpm_spent(key, first, minute_left, second)
    if outcome == outcomes.PARALLEL_FULL:
        return limits.parallel_full(key, first)
    return RuntimeError(f"unknown admission outcome {outcome}")
