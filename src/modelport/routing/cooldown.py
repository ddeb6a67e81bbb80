"""Cool-down: a model that keeps failing is skipped for a while instead of being hammered.

A small circuit breaker over consecutive failed requests. The count is not reset when a
cool-down starts, so once it ends a single further failure cools the model down again,
while one success closes the breaker.
"""

from __future__ import annotations


class Cooldown:
    __slots__ = ("threshold", "seconds", "consecutive_failures", "until", "elsewhere")

    def __init__(self, threshold: int = 3, seconds: float = 30.0) -> None:
        self.threshold = threshold
        self.seconds = seconds
        self.consecutive_failures = 0
        self.until = 0.0
        # The cool-down in force was started by another gateway (shared through Redis).
        self.elsewhere = False

    def available(self, now: float) -> bool:
        return now >= self.until

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, now: float, retry_after: float | None = None) -> bool:
        """Count one failed request; True when it starts a cool-down."""
        self.consecutive_failures += 1
        if self.seconds <= 0 or self.consecutive_failures < self.threshold:
            return False
        # An upstream that asked for a longer pause (Retry-After) gets it.
        self.until = now + max(self.seconds, retry_after or 0.0)
        self.elsewhere = False
        return True

    def hold_until(self, until: float) -> bool:
        """Skip the model until `until` too: another gateway cooled it down. True when
        that starts or lengthens a cool-down here."""
        if until <= self.until:
            return False
        self.until = until
        self.elsewhere = True
        return True


def never_cools() -> Cooldown:
    """For local workers, whose supervisor already restarts them and reports their state."""
    return Cooldown(threshold=1, seconds=0.0)
