"""Retry policy as pure functions: which failures are worth another try, and how long to wait.

Nothing here sleeps or reads a clock; the caller passes time and randomness in, so the
policy is tested with fake values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from modelport.errors import (
    InvalidRequestError,
    MalformedUpstreamError,
    ModelportError,
    UpstreamError,
    UpstreamTimeoutError,
)
from modelport.errors import ProviderFault
from modelport.providers.upstream import UpstreamConnectionError


class Failure(enum.Enum):
    """What a failed attempt says about the upstream, which decides what happens next."""

    CLIENT = "client"        # the request itself is wrong: answer it as is, try nothing else
    TRANSIENT = "transient"  # no connection, 429, 5xx: retry, then fall back; counts toward cool-down
    BROKEN = "broken"        # silent upstream, faulty plugin: fall back at once; counts toward cool-down
    REFUSED = "refused"      # 401/403/404...: this model cannot answer; fall back, not counted

    @property
    def retryable(self) -> bool:
        return self is Failure.TRANSIENT

    @property
    def falls_back(self) -> bool:
        return self is not Failure.CLIENT

    @property
    def counts_toward_cooldown(self) -> bool:
        return self in (Failure.TRANSIENT, Failure.BROKEN)


def classify(error: ModelportError) -> Failure:
    if isinstance(error, InvalidRequestError):
        return Failure.CLIENT
    if isinstance(error, UpstreamConnectionError):
        return Failure.TRANSIENT  # nothing reached the upstream, so trying again is safe
    if isinstance(error, (UpstreamTimeoutError, ProviderFault, MalformedUpstreamError)):
        # A read timeout may mean the upstream is still generating (and billing): not
        # repeated on the same model, but another model may answer.
        return Failure.BROKEN
    if isinstance(error, UpstreamError):
        status = error.upstream_status  # what the upstream said, not what the client is told
        if status == 429 or status >= 500:
            return Failure.TRANSIENT
        return Failure.REFUSED
    return Failure.CLIENT


def retry_after_seconds(error: ModelportError, now_epoch: float) -> float | None:
    """The upstream's Retry-After (seconds or an HTTP date), if it sent one."""
    value = error.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_epoch)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 10.0

    def backoff_delay(self, attempt: int, jitter: float) -> float:
        """Exponential backoff after failed try number `attempt` (1-based), with jitter in
        [0, 1): half of the delay is fixed, half random, so clients that failed together
        do not come back together."""
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay / 2 + delay / 2 * jitter

    def wait_before_retry(
        self, attempt: int, error: ModelportError, *, jitter: float, now_epoch: float
    ) -> float | None:
        """Seconds to wait before the next try, or None when there is none to make."""
        if attempt >= self.attempts or not classify(error).retryable:
            return None
        delay = self.backoff_delay(attempt, jitter)
        asked = retry_after_seconds(error, now_epoch)
        if asked is None:
            return delay
        if asked > self.max_retry_after:
            return None  # waiting that long inside one request helps nobody; answer or fall back
        return max(asked, delay)


NO_RETRIES = RetryPolicy(attempts=1)
