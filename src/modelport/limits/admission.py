"""Whether a virtual key may send one more request now, and the rate-limit headers it gets.

Checked before any upstream work, in this order: budget and tokens per minute (read only),
then requests per minute and parallel requests (taken; a later refusal gives the earlier
ones back). Tokens are counted from real usage when the answer is done (`settle`).
Windows are fixed: requests and tokens per UTC minute, budgets per UTC day or month, or
for the key's lifetime ("total", seeded from the usage database once per process).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from modelport.errors import PermissionDeniedError, RateLimitError
from modelport.limits.counters import Counters

logger = logging.getLogger("modelport.gateway")

MINUTE_S = 60
SLOT_EXPIRY_S = 3600  # a slot held by a gateway that died is not released; it expires
_WINDOW_SLACK_S = 5


class LimitedKey(Protocol):
    """What admission reads of a virtual key."""

    id: str
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_tokens: int | None
    budget_period: str  # "day" | "month" | "total"


# (key id, since) -> tokens the key used since then, from the usage store.
TokensUsed = Callable[[str, dt.datetime], Awaitable[int]]


class KeyLimitError(RateLimitError):
    """A key's own limit (not the model's capacity); `code` says which."""


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
class Admission:
    """One admitted request: its rate-limit headers, and `settle` to run when it is done."""

    key: LimitedKey
    raw_headers: list[tuple[bytes, bytes]]  # as ASGI sends them
    _limiter: "KeyLimiter"
    _window: _KeyWindow
    _holds_slot: bool
    _settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.raw_headers}

    async def settle(self, tokens: int | None) -> None:
        """Count the tokens the answer really used and give the parallel slot back."""
        if self._settled:
            return
        self._settled = True
        await self._limiter._settle(self, tokens or 0)

    def settle_now(self, tokens: int | None) -> bool:
        """`settle` at once when the counters are in this process; False when settling
        needs I/O (Redis), which is then the caller's to schedule with `settle`."""
        if self._settled:
            return True
        add = self._limiter._add_now
        if add is None:
            return False
        self._settled = True
        for name, amount, expire_s in self._limiter._settlement(self, tokens or 0):
            add(name, amount, expire_s)
        return True


class KeyLimiter:
    def __init__(self, counters: Counters, tokens_used: TokensUsed | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._counters = counters
        self._tokens_used = tokens_used
        self._clock = clock
        # budget period -> (minute it was worked out in, label, start, end as a timestamp)
        self._windows: dict[str, tuple[int, str, dt.datetime, float | None]] = {}
        self._seeded: set[str] = set()
        # Budget counters being seeded now: the requests that arrive meanwhile wait for the
        # one query instead of each asking the usage store (a burst of 64 did, serially).
        self._seeding: dict[str, asyncio.Future] = {}
        self._key_windows: dict[str, _KeyWindow] = {}
        # Counters in this process settle without the event loop (see Admission.settle_now).
        self._add_now = getattr(counters, "add_now", None)

    async def close(self) -> None:
        await self._counters.close()

    async def admit(self, key: LimitedKey, max_tokens: int | None = None) -> Admission:
        now = self._clock()
        minute, minute_left = int(now // MINUTE_S), MINUTE_S - now % MINUTE_S
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
                raise KeyLimitError(
                    f"this key has {running} requests in flight, its max_parallel "
                    f"({key.max_parallel}); retry when one finishes",
                    code="max_parallel_exceeded", headers={"Retry-After": "1"})
            holds_slot = True
        return Admission(key, _raw_headers(key, minute_left, requests_now, tokens_now), self,
                         window, holds_slot)

    def _window(self, key: LimitedKey, minute: int, now: float) -> _KeyWindow:
        """The key's counter names this minute (budget periods only change at midnight)."""
        window = self._key_windows.get(key.id)
        if window is not None and window.minute == minute and window.period == key.budget_period:
            return window
        budget = since = end = None
        if key.budget_tokens is not None:
            budget, since, end = self._budget_period(key, now)
        if len(self._key_windows) > 100_000:
            self._key_windows.clear()
        window = self._key_windows[key.id] = _KeyWindow(
            minute, key.budget_period, f"rpm:{key.id}:{minute}", f"tpm:{key.id}:{minute}", f"par:{key.id}",
            budget, since, end)
        return window

    async def _check_budget(self, key: LimitedKey, window: _KeyWindow, now: float) -> None:
        if key.budget_tokens is None:
            return
        if window.budget is None:  # the key was given a budget this minute
            window.budget, window.budget_since, window.budget_end = self._budget_period(key, now)
        name = window.budget
        seconds_left = None if window.budget_end is None else window.budget_end - now
        if name not in self._seeded and self._tokens_used is not None:
            used = await self._seed_budget(name, key, window.budget_since, seconds_left)
        else:
            used = await self._counters.count(name)
        if used < key.budget_tokens:
            return
        message = (f"this key's token budget ({key.budget_tokens} tokens per "
                   f"{key.budget_period}) is spent: {used} used")
        if seconds_left is None:
            raise PermissionDeniedError(message, code="budget_exhausted")
        raise KeyLimitError(message + "; it renews at the start of the next "
                            f"{key.budget_period} (UTC)", code="budget_exhausted",
                            headers={"Retry-After": str(int(seconds_left) + 1)})

    async def _seed_budget(self, name: str, key: LimitedKey, since: dt.datetime,
                           seconds_left: float | None) -> int:
        """Start a budget counter new to this process (or period) from what the usage store
        holds; in Redis another gateway may have started it already, and its count stands."""
        pending = self._seeding.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return await self._counters.count(name)
        pending = self._seeding[name] = asyncio.get_running_loop().create_future()
        try:
            assert self._tokens_used is not None
            try:
                already = await self._tokens_used(key.id, since)
            except Exception as error:  # noqa: BLE001 - the database may be away
                # Serving goes on; the budget counts from now rather than refusing everyone.
                logger.warning("could not read the tokens key %s used this %s; its budget "
                               "counts from now: %s: %s", key.id, key.budget_period,
                               type(error).__name__, error)
                already = 0
            used = await self._counters.seed(name, already, int(seconds_left) + _WINDOW_SLACK_S
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
            raise KeyLimitError(
                f"max_tokens {max_tokens} is more than this key's tokens per minute "
                f"({key.tpm}); ask for fewer", code="tpm_exceeded")
        used = await self._counters.count(window.tpm)
        if used >= key.tpm:
            requests = await self._counters.count(window.rpm) if key.rpm else 0
            raise KeyLimitError(
                f"this key used {used} tokens this minute, its limit ({key.tpm} per minute)",
                code="tpm_exceeded", headers=_retry(key, minute_left, requests, used))
        return used

    async def _take_request(self, key: LimitedKey, window: _KeyWindow, minute_left: float,
                            tokens_now: int) -> int:
        if key.rpm is None:
            return 0
        taken, count = await self._counters.take(
            window.rpm, 1, key.rpm, MINUTE_S + _WINDOW_SLACK_S)
        if not taken:
            raise KeyLimitError(
                f"this key sent {count} requests this minute, its limit ({key.rpm} per minute)",
                code="rpm_exceeded", headers=_retry(key, minute_left, count, tokens_now))
        return count

    async def _settle(self, admission: Admission, tokens: int) -> None:
        for name, amount, expire_s in self._settlement(admission, tokens):
            await self._counters.add(name, amount, expire_s)

    def _settlement(self, admission: Admission, tokens: int) -> list[tuple[str, int, int]]:
        """The additions that settle a finished request: (counter, amount, expiry). The
        tokens count in the minute and budget period the request was admitted in."""
        key, window = admission.key, admission._window
        additions = []
        if admission._holds_slot:
            additions.append((window.parallel, -1, SLOT_EXPIRY_S))
        if tokens <= 0:
            return additions
        if key.tpm is not None:
            additions.append((window.tpm, tokens, MINUTE_S + _WINDOW_SLACK_S))
        if key.budget_tokens is not None and window.budget is not None:
            # A period that ends keeps its counter a little longer; "total" never ends.
            expire_s = 0 if window.budget_end is None else \
                max(0, int(window.budget_end - self._clock())) + _WINDOW_SLACK_S
            additions.append((window.budget, tokens, expire_s))
        return additions

    def _budget_period(self, key: LimitedKey, now: float) -> tuple[str, dt.datetime, float | None]:
        """The key's budget counter name, the period's start and end (worked out once a
        minute per period kind: it only changes at midnight UTC)."""
        minute = int(now // MINUTE_S)
        cached = self._windows.get(key.budget_period)
        if cached is None or cached[0] != minute:
            label, start, end = _period(key.budget_period, now)
            cached = self._windows[key.budget_period] = (minute, label, start, end)
        _, label, start, end = cached
        return f"budget:{key.id}:{label}", start, end


def _period(period: str, now: float) -> tuple[str, dt.datetime, float | None]:
    """The budget period holding `now`: its label, start, and end (None: it never ends)."""
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start, (start + dt.timedelta(days=1)).timestamp()
    if period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        return start.strftime("%Y-%m"), start, (start + dt.timedelta(days=days)).timestamp()
    return "total", dt.datetime.fromtimestamp(0, dt.timezone.utc), None


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "17s", "1m3s"."""
    whole = max(1, int(seconds + 0.999))
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


_LIMIT_REQUESTS, _REMAINING_REQUESTS, _RESET_REQUESTS = (
    b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests")
_LIMIT_TOKENS, _REMAINING_TOKENS, _RESET_TOKENS = (
    b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens")


def _raw_headers(key: LimitedKey, minute_left: float, requests: int,
                 tokens: int) -> list[tuple[bytes, bytes]]:
    """OpenAI's rate-limit headers, as ASGI sends them."""
    headers: list[tuple[bytes, bytes]] = []
    reset = _duration(minute_left).encode()
    if key.rpm is not None:
        headers += ((_LIMIT_REQUESTS, b"%d" % key.rpm),
                    (_REMAINING_REQUESTS, b"%d" % max(0, key.rpm - requests)),
                    (_RESET_REQUESTS, reset))
    if key.tpm is not None:
        headers += ((_LIMIT_TOKENS, b"%d" % key.tpm),
                    (_REMAINING_TOKENS, b"%d" % max(0, key.tpm - tokens)),
                    (_RESET_TOKENS, reset))
    return headers


def _retry(key: LimitedKey, minute_left: float, requests: int, tokens: int) -> dict[str, str]:
    headers = {name.decode(): value.decode()
               for name, value in _raw_headers(key, minute_left, requests, tokens)}
    headers["Retry-After"] = str(max(1, int(minute_left + 0.999)))
    return headers
