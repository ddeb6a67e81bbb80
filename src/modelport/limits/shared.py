"""Key limits counted in a Redis every gateway shares (`server.redis_url`), so one key's
limits hold across all of them. Each check-and-take is one atomic Redis script, so two
gateways can never both take a window's last request; a later refusal gives back what an
earlier check took."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelport.limits import admission as limits
from modelport.limits.admission import MINUTE_S, WINDOW_SLACK_S, LimitedKey, RawHeaders, TokensUsed
from modelport.limits.counters import Counters

SLOT_EXPIRY_S = 3600  # a slot held by a gateway that died is not released; it expires


@dataclass(slots=True)
class _KeyWindow:
    """One key's counter names for one minute, worked out once per key and minute."""

    minute: int
    period: str  # the key's budget_period when worked out (a PATCH may change it)
    rpm: str
    tpm: str
    parallel: str
    budget: str | None  # the budget counter, when the key has a budget
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
    _settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return limits.as_dict(self.raw_headers)

    def settle_now(self, tokens: int | None) -> bool:
        return self._settled  # settling talks to Redis: the caller schedules `settle`

    async def settle(self, tokens: int | None) -> None:
        """Count the tokens the answer really used and give the parallel slot back."""
        if self._settled:
            return
        self._settled = True
        await self._limiter._settle(self, tokens or 0)


class SharedKeyLimiter:
    def __init__(self, counters: Counters, tokens_used: TokensUsed | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._counters = counters
        self._tokens_used = tokens_used
        self._clock = clock
        self._periods = limits.BudgetPeriods()
        self._seeded: set[str] = set()
        # Budget counters being seeded now: the requests that arrive meanwhile wait for the
        # one query instead of each asking the usage store (a burst of 64 did, serially).
        self._seeding: dict[str, asyncio.Future] = {}
        self._key_windows: dict[str, _KeyWindow] = {}

    async def close(self) -> None:
        await self._counters.close()

    def admit_now(self, key: LimitedKey, max_tokens: int | None = None) -> None:
        return None  # every admission here asks Redis

    async def admit(self, key: LimitedKey, max_tokens: int | None = None) -> SharedAdmission:
        now, minute, minute_left = limits.minute_of(self._clock)
        window = self._window(key, minute, now)
        await self._check_budget(key, window, now)
        tokens_now = await self._check_tpm(key, window, minute_left, max_tokens)
        requests_now = await self._take_request(key, window, minute_left, tokens_now)
        holds_slot = False
        if key.max_parallel is not None:
            taken, running = await self._counters.take(
                window.parallel, 1, key.max_parallel, SLOT_EXPIRY_S)
            if not taken:
                if key.rpm is not None:
                    await self._counters.add(window.rpm, -1, 0)
                raise limits.parallel_full(key, running)
            holds_slot = True
        return SharedAdmission(key, limits.raw_headers(key, minute_left, requests_now, tokens_now),
                               self, window, holds_slot)

    def _window(self, key: LimitedKey, minute: int, now: float) -> _KeyWindow:
        """The key's counter names this minute (budget periods only change at midnight)."""
        window = self._key_windows.get(key.id)
        if window is not None and window.minute == minute and window.period == key.budget_period:
            return window
        budget = since = end = None
        if key.budget_tokens is not None:
            budget, since, end = self._periods.of(key, now)
        if len(self._key_windows) > 100_000:
            self._key_windows.clear()
        window = self._key_windows[key.id] = _KeyWindow(
            minute, key.budget_period, f"rpm:{key.id}:{minute}", f"tpm:{key.id}:{minute}",
            f"par:{key.id}", budget, since, end)
        return window

    async def _check_budget(self, key: LimitedKey, window: _KeyWindow, now: float) -> None:
        if key.budget_tokens is None:
            return
        if window.budget is None:  # the key was given a budget this minute
            window.budget, window.budget_since, window.budget_end = self._periods.of(key, now)
        name = window.budget
        seconds_left = None if window.budget_end is None else window.budget_end - now
        if name not in self._seeded and self._tokens_used is not None:
            used = await self._seed_budget(name, key, window.budget_since, seconds_left)
        else:
            used = await self._counters.count(name)
        if used >= key.budget_tokens:
            raise limits.budget_spent(key, used, seconds_left)

    async def _seed_budget(self, name: str, key: LimitedKey, since: dt.datetime,
                           seconds_left: float | None) -> int:
        """Start a budget counter new to this process (or period) from what the usage store
        holds; another gateway may have started it already, and its count stands."""
        pending = self._seeding.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return await self._counters.count(name)
        pending = self._seeding[name] = asyncio.get_running_loop().create_future()
        try:
            assert self._tokens_used is not None
            already = await limits.used_before(self._tokens_used, key, since)
            used = await self._counters.seed(name, already, int(seconds_left) + WINDOW_SLACK_S
                                             if seconds_left else 0)
            self._seeded.add(name)
            pending.set_result(None)
            return used
        except BaseException as error:
            pending.set_exception(error)
            pending.exception()  # retrieved: the waiters get it, nobody else must
            raise
        finally:
            del self._seeding[name]

    async def _check_tpm(self, key: LimitedKey, window: _KeyWindow, minute_left: float,
                         max_tokens: int | None) -> int:
        if key.tpm is None:
            return 0
        if max_tokens is not None and max_tokens > key.tpm:
            raise limits.max_tokens_above_tpm(key, max_tokens)
        used = await self._counters.count(window.tpm)
        if used >= key.tpm:
            requests = await self._counters.count(window.rpm) if key.rpm else 0
            raise limits.tpm_spent(key, used, minute_left, requests)
        return used

    async def _take_request(self, key: LimitedKey, window: _KeyWindow, minute_left: float,
                            tokens_now: int) -> int:
        if key.rpm is None:
            return 0
        taken, count = await self._counters.take(
            window.rpm, 1, key.rpm, MINUTE_S + WINDOW_SLACK_S)
        if not taken:
            raise limits.rpm_spent(key, count, minute_left, tokens_now)
        return count

    async def _settle(self, admission: SharedAdmission, tokens: int) -> None:
        """The tokens count in the minute and budget period the request was admitted in."""
        key, window = admission.key, admission._window
        if admission._holds_slot:
            await self._counters.add(window.parallel, -1, SLOT_EXPIRY_S)
        if tokens <= 0:
            return
        if key.tpm is not None:
            await self._counters.add(window.tpm, tokens, MINUTE_S + WINDOW_SLACK_S)
        if key.budget_tokens is not None and window.budget is not None:
            # A period that ends keeps its counter a little longer; "total" never ends.
            expire_s = 0 if window.budget_end is None else \
                max(0, int(window.budget_end - self._clock())) + WINDOW_SLACK_S
            await self._counters.add(window.budget, tokens, expire_s)
