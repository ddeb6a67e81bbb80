"""What every key limiter shares: the windows limits count in, the refusals, and OpenAI's
rate-limit headers.

Admission reserves what a request may spend (its `reserve`: prompt and max_tokens, see
limits.reservation) against the key's budget and tokens per minute, and takes one of its
requests per minute and parallel slots, all in one step: no other admission can come in
between a check and its reservation, so requests admitted together can never spend more
than the limits allow. The request's `settle` counts the tokens it really used and gives
back the rest. Windows are fixed: requests and tokens per UTC minute, budgets per UTC day
or month, or for the key's lifetime ("total"). The usage database is the source of truth
for budgets: a budget counter starts from its usage rows.

Two limiters implement this: `limits.local.LocalKeyLimiter` counts in this process (the
default), `limits.shared.SharedKeyLimiter` in a Redis every gateway shares.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from modelport.errors import ModelportError, PermissionDeniedError, RateLimitError

logger = logging.getLogger("modelport.gateway")

MINUTE_S = 60
WINDOW_SLACK_S = 5


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
RawHeaders = list[tuple[bytes, bytes]]  # as ASGI sends them


class BudgetUnknownError(ModelportError):
    """A key's budget must be counted afresh and nothing says what it used: its requests
    wait (503, Retry-After) rather than spend a budget that may be gone."""

    status = 503
    type = "service_unavailable"
    code = "budget_unavailable"


class KeyLimitError(RateLimitError):
    """A key's own limit (not the model's capacity); `code` says which."""


class Held(Protocol):
    """One admitted request's hold on its key's limits."""

    raw_headers: RawHeaders

    @property
    def headers(self) -> dict[str, str]: ...

    def settle_now(self, tokens: int | None) -> bool:
        """Count the answer's tokens, give back the rest of its reservation and its slot at
        once; False when that needs I/O, which is then the caller's to schedule with
        `settle`."""

    async def settle(self, tokens: int | None) -> None: ...


class KeyLimiter(Protocol):
    async def admit(self, key: LimitedKey, reserve: int = 0) -> Held:
        """Admit a request that may spend up to `reserve` tokens, or refuse it."""

    def admit_now(self, key: LimitedKey, reserve: int = 0) -> Held | None:
        """`admit` when it needs no I/O (else None: call `admit`)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def as_dict(raw: RawHeaders) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in raw}


class BudgetPeriods:
    """Each budget period's label, start and end, worked out once a minute per period kind
    (they only change at midnight UTC)."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[int, str, dt.datetime, float | None]] = {}

    def of(self, key: LimitedKey, now: float) -> tuple[str, dt.datetime, float | None]:
        """The key's budget counter name, its period's start, and its end (None: never)."""
        minute = int(now // MINUTE_S)
        cached = self._cached.get(key.budget_period)
        if cached is None or cached[0] != minute:
            label, start, end = _period(key.budget_period, now)
            cached = self._cached[key.budget_period] = (minute, label, start, end)
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


def minute_of(clock: Callable[[], float] = time.time) -> tuple[float, int, float]:
    """Now, the UTC minute it is in, and the seconds left in that minute."""
    now = clock()
    return now, int(now // MINUTE_S), MINUTE_S - now % MINUTE_S


async def used_before(tokens_used: TokensUsed, key: LimitedKey, since: dt.datetime) -> int:
    """The tokens the usage store says the key used since `since`; 0 when it cannot say
    (the database may be away: serving goes on, the budget counts from now)."""
    try:
        return await tokens_used(key.id, since)
    except BudgetUnknownError:
        raise
    except Exception as error:  # noqa: BLE001
        logger.warning("could not read the tokens key %s used this %s; its budget counts "
                       "from now: %s: %s", key.id, key.budget_period, type(error).__name__,
                       error)
        return 0


# --- refusals -----------------------------------------------------------------------------

def budget_spent(key: LimitedKey, used: int, seconds_left: float | None) -> Exception:
    message = (f"this key's token budget ({key.budget_tokens} tokens per "
               f"{key.budget_period}) is spent: {used} used")
    if seconds_left is None:
        return PermissionDeniedError(message, code="budget_exhausted")
    return KeyLimitError(message + "; it renews at the start of the next "
                         f"{key.budget_period} (UTC)", code="budget_exhausted",
                         headers={"Retry-After": str(int(seconds_left) + 1)})


def budget_short(key: LimitedKey, used: int, reserve: int,
                 seconds_left: float | None) -> Exception:
    """The request may spend more than is left of the budget, whatever else runs."""
    message = (f"this request may use up to {reserve} tokens (its prompt and max_tokens); "
               f"this key's token budget ({key.budget_tokens} tokens per {key.budget_period}) "
               f"has {max(0, key.budget_tokens - used)} left; "  # type: ignore[operator]
               "ask for fewer with max_tokens")
    if seconds_left is None:
        return PermissionDeniedError(message, code="budget_exhausted")
    return KeyLimitError(message, code="budget_exhausted",
                         headers={"Retry-After": str(int(seconds_left) + 1)})


def budget_held(key: LimitedKey, held: int, reserve: int) -> KeyLimitError:
    """The request would fit the budget, but requests in flight hold part of it."""
    return KeyLimitError(
        f"this request may use up to {reserve} tokens, and requests of this key in flight "
        f"hold {held} tokens of its budget ({key.budget_tokens} per {key.budget_period}) "
        "until they finish; retry when one does",
        code="budget_reserved", headers={"Retry-After": "1"})


def reserve_above_tpm(key: LimitedKey, reserve: int) -> KeyLimitError:
    return KeyLimitError(f"this request may use up to {reserve} tokens (its prompt and "
                         f"max_tokens), more than this key's tokens per minute ({key.tpm}); "
                         "ask for fewer with max_tokens", code="tpm_exceeded")


def tpm_spent(key: LimitedKey, used: int, minute_left: float, requests: int) -> KeyLimitError:
    return KeyLimitError(
        f"this key used or holds {used} tokens this minute (requests in flight hold what "
        f"they may still use), its limit {key.tpm} per minute",
        code="tpm_exceeded", headers=_retry(key, minute_left, requests, used))


def rpm_spent(key: LimitedKey, count: int, minute_left: float, tokens: int) -> KeyLimitError:
    return KeyLimitError(
        f"this key sent {count} requests this minute, its limit ({key.rpm} per minute)",
        code="rpm_exceeded", headers=_retry(key, minute_left, count, tokens))


def parallel_full(key: LimitedKey, running: int) -> KeyLimitError:
    return KeyLimitError(
        f"this key has {running} requests in flight, its max_parallel "
        f"({key.max_parallel}); retry when one finishes",
        code="max_parallel_exceeded", headers={"Retry-After": "1"})


# --- headers ------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    """OpenAI's reset format: "17s", "1m3s"."""
    whole = max(1, int(seconds + 0.999))
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


# A minute's resets, worked out once: the header is built for every admitted request.
_RESETS = tuple(_duration(seconds).encode() for seconds in range(MINUTE_S + 1))

_LIMIT_REQUESTS, _REMAINING_REQUESTS, _RESET_REQUESTS = (
    b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests")
_LIMIT_TOKENS, _REMAINING_TOKENS, _RESET_TOKENS = (
    b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens")


def raw_headers(key: LimitedKey, minute_left: float, requests: int, tokens: int) -> RawHeaders:
    """OpenAI's rate-limit headers, as ASGI sends them."""
    whole = int(minute_left + 0.999)
    reset = _RESETS[whole] if 0 < whole <= MINUTE_S else _duration(minute_left).encode()
    rpm, tpm = key.rpm, key.tpm
    if rpm is not None:
        requests_left = (_REMAINING_REQUESTS, b"%d" % (rpm - requests if requests < rpm else 0))
        if tpm is None:
            return [_limit_pair(_LIMIT_REQUESTS, rpm), requests_left, (_RESET_REQUESTS, reset)]
    elif tpm is None:
        return []
    tokens_left = (_REMAINING_TOKENS, b"%d" % (tpm - tokens if tokens < tpm else 0))
    if rpm is None:
        return [_limit_pair(_LIMIT_TOKENS, tpm), tokens_left, (_RESET_TOKENS, reset)]
    return [_limit_pair(_LIMIT_REQUESTS, rpm), requests_left, (_RESET_REQUESTS, reset),
            _limit_pair(_LIMIT_TOKENS, tpm), tokens_left, (_RESET_TOKENS, reset)]


_LIMIT_PAIRS: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}


def _limit_pair(name: bytes, limit: int) -> tuple[bytes, bytes]:
    """The (name, value) of a limit header; a key's limits rarely change, so made once."""
    pair = _LIMIT_PAIRS.get((name, limit))
    if pair is None:
        if len(_LIMIT_PAIRS) > 10_000:
            _LIMIT_PAIRS.clear()
        pair = _LIMIT_PAIRS[(name, limit)] = (name, b"%d" % limit)
    return pair


def _retry(key: LimitedKey, minute_left: float, requests: int, tokens: int) -> dict[str, str]:
    headers = as_dict(raw_headers(key, minute_left, requests, tokens))
    headers["Retry-After"] = str(max(1, int(minute_left + 0.999)))
    return headers
