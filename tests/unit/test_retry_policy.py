"""Retry policy, cool-down and failover as pure logic, with a fake clock and no real waits."""

from __future__ import annotations

import asyncio

import pytest

from modelport.config import parse_config
from modelport.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotReadyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from modelport.errors import ProviderFault
from modelport.routing import failover
from modelport.routing.cooldown import Cooldown
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.retry import Failure, RetryPolicy, classify, retry_after_seconds
from modelport.providers.upstream import UpstreamConnectionError, UpstreamConnectTimeoutError


def status(code: int, retry_after: str | None = None) -> UpstreamError:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return UpstreamError(f"upstream said {code}", status=code, headers=headers)


@pytest.mark.parametrize("error, kind", [
    (UpstreamConnectionError("refused"), Failure.TRANSIENT),
    (UpstreamConnectTimeoutError("no accept"), Failure.TRANSIENT),
    (status(429), Failure.TRANSIENT),
    (status(500), Failure.TRANSIENT),
    (status(503), Failure.TRANSIENT),
    (UpstreamTimeoutError("silent"), Failure.BROKEN),
    (ProviderFault("plugin broke"), Failure.BROKEN),
    (status(401), Failure.REFUSED),
    (status(404), Failure.REFUSED),
    (InvalidRequestError("bad"), Failure.CLIENT),
    (ContextLengthError("too long"), Failure.CLIENT),
])
def test_failures_are_classified_by_type_and_status(error, kind):
    assert classify(error) is kind


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds(status(429, "7"), now_epoch=0) == 7
    assert retry_after_seconds(status(429, "Thu, 01 Jan 1970 00:00:30 GMT"), now_epoch=10) == 20
    assert retry_after_seconds(status(429, "soon"), now_epoch=0) is None
    assert retry_after_seconds(status(429), now_epoch=0) is None


def test_backoff_doubles_is_capped_and_jittered():
    policy = RetryPolicy(attempts=10, backoff=1.0, max_backoff=5.0)
    assert [policy.backoff_delay(n, jitter=0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert [policy.backoff_delay(n, jitter=0.999) for n in (1, 2)] == pytest.approx([1.0, 2.0],
                                                                                    abs=0.01)


def test_only_transient_failures_are_retried_and_only_while_attempts_remain():
    policy = RetryPolicy(attempts=3, backoff=0.1)
    wait = lambda attempt, error: policy.wait_before_retry(  # noqa: E731
        attempt, error, jitter=0.0, now_epoch=0)
    assert wait(1, status(503)) == pytest.approx(0.05)
    assert wait(2, status(503)) == pytest.approx(0.1)
    assert wait(3, status(503)) is None  # the third try was the last
    assert wait(1, UpstreamTimeoutError("silent")) is None
    assert wait(1, InvalidRequestError("bad")) is None


def test_retry_after_is_honoured_up_to_the_limit():
    policy = RetryPolicy(attempts=3, backoff=0.1, max_retry_after=10)
    assert policy.wait_before_retry(1, status(429, "4"), jitter=0, now_epoch=0) == 4
    assert policy.wait_before_retry(1, status(429, "60"), jitter=0, now_epoch=0) is None


def test_cooldown_starts_after_consecutive_failures_and_one_success_resets():
    cooldown = Cooldown(threshold=3, seconds=30)
    assert not cooldown.record_failure(now=0)
    cooldown.record_success()
    assert not cooldown.record_failure(now=1)
    assert not cooldown.record_failure(now=2)
    assert cooldown.record_failure(now=3)
    assert not cooldown.available(now=32.9) and cooldown.remaining(now=13) == 20
    assert cooldown.available(now=33)
    # Still failing when the cool-down ends: one more failure is enough to cool it again.
    assert cooldown.record_failure(now=33)
    assert not cooldown.available(now=40)


def test_cooldown_lasts_at_least_what_the_upstream_asked_for():
    cooldown = Cooldown(threshold=1, seconds=5)
    cooldown.record_failure(now=0, retry_after=60)
    assert cooldown.remaining(now=0) == 60


# -- failover over deployments, with a fake clock and a recording sleep ----------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def deployments(**primary):
    config = parse_config({"models": [
        {"name": "a", "engine": "openai", "base_url": "http://a/v1", "fallbacks": ["b"],
         "retries": {"attempts": 3, "backoff": 0.2}, "cooldown": {"failures": 2, "seconds": 60},
         **primary},
        {"name": "b", "engine": "openai", "base_url": "http://b/v1",
         "retries": {"attempts": 1}},
    ]})
    return [Deployment(m, m.base_url, 2, status=DeploymentStatus.READY) for m in config.models]


def serve(plan, outcomes, fake):
    """Run failover.serve where each model answers from its list of outcomes in turn."""
    calls: list[str] = []

    async def attempt(deployment, replica):
        calls.append(deployment.name)
        outcome = outcomes[deployment.name].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    served, replica, answer = asyncio.run(failover.serve(
        plan, attempt, clock=fake.clock, sleep=fake.sleep, jitter=lambda: 0.0,
        wall_clock=lambda: 0.0))
    served.release(replica)  # as the relay does once the answer is sent
    return (served, answer), calls


def test_transient_failures_are_retried_with_backoff_on_the_same_model():
    a, b = deployments()
    fake = FakeTime()
    (served, answer), calls = serve([a, b], {"a": [status(503), status(502), "ok"]}, fake)
    assert (served, answer, calls) == (a, "ok", ["a", "a", "a"])
    assert fake.slept == pytest.approx([0.1, 0.2])


def test_a_failing_model_falls_back_to_the_next_and_frees_its_slot():
    a, b = deployments()
    fake = FakeTime()
    (served, answer), calls = serve([a, b], {"a": [status(429, "60")], "b": ["from b"]}, fake)
    assert (served.name, answer, calls) == ("b", "from b", ["a", "b"])
    assert fake.slept == []  # Retry-After 60 is beyond max_retry_after: no waiting, fall back
    assert a.in_flight == 0 and b.in_flight == 0


def test_client_errors_are_answered_without_retry_or_fallback():
    a, b = deployments()
    with pytest.raises(InvalidRequestError):
        serve([a, b], {"a": [InvalidRequestError("bad")], "b": ["never"]}, FakeTime())
    assert a.in_flight == 0 and b.in_flight == 0
    assert a.cooldown.consecutive_failures == 0


def test_when_every_model_fails_the_last_failure_is_raised():
    a, b = deployments(retries={"attempts": 1})
    with pytest.raises(UpstreamError) as error:
        serve([a, b], {"a": [status(500)], "b": [status(401)]}, FakeTime())
    assert error.value.status == 401


def test_a_cooled_down_model_is_skipped_without_being_called():
    a, b = deployments(retries={"attempts": 1})
    fake = FakeTime()
    for _ in range(2):
        serve([a, b], {"a": [UpstreamConnectionError("down")], "b": ["b"]}, fake)
    assert not a.cooldown.available(fake.now)
    (served, _), calls = serve([a, b], {"a": ["never"], "b": ["b"]}, fake)
    assert calls == ["b"]
    # Alone, a cooled-down model answers 503 with the time left, still without a call.
    with pytest.raises(ModelNotReadyError) as error:
        serve([a], {"a": ["never"]}, fake)
    assert error.value.code == "model_cooling_down"
    assert error.value.headers["Retry-After"] == "60"
    fake.now += 61
    (served, answer), calls = serve([a], {"a": ["back"]}, fake)
    assert (answer, calls) == ("back", ["a"]) and a.cooldown.consecutive_failures == 0


def test_a_full_model_is_skipped_and_its_429_kept_when_nothing_else_answers():
    a, b = deployments()
    a.reconfigure(a.config, 0, a.load)
    (served, _), calls = serve([a, b], {"b": ["b"]}, FakeTime())
    assert served is b and calls == ["b"]
    with pytest.raises(Exception) as error:
        serve([a], {}, FakeTime())
    assert error.value.status == 429


def test_cancellation_during_a_retry_wait_frees_the_slot():
    a, _ = deployments()

    async def attempt(deployment, replica):
        raise status(503)

    async def cancelled_sleep(seconds):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(failover.serve([a], attempt, sleep=cancelled_sleep, jitter=lambda: 0.0))
    assert a.in_flight == 0


def test_the_serving_model_keeps_its_slot_until_the_caller_releases_it():
    a, b = deployments()

    async def attempt(deployment, replica):
        return "ok"

    served, _, _ = asyncio.run(failover.serve([a, b], attempt))
    assert served is a and a.in_flight == 1  # held while the answer is being relayed
