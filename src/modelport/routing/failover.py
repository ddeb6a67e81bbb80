"""Serving one request from a list of models: retries on each replica, then the next
replica, then the next model.

Everything here happens before the first byte is relayed to the client (for a stream,
`attempt` only opens it), so a retried or re-routed request never duplicates text.
The clock, the sleep and the jitter are parameters, so tests run it without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from modelport.errors import ModelNotReadyError, ModelportError, RateLimitError, unexpected_error
from modelport.routing.deployments import Deployment, Replica
from modelport.routing.retry import classify, retry_after_seconds

logger = logging.getLogger("modelport.routing")

T = TypeVar("T")
Attempt = Callable[[Deployment, Replica], Awaitable[T]]


class RoutingListener(Protocol):
    """Told when this gateway takes a model or a replica out of rotation for a while (the
    state other gateways share, routing.shared_state); it must not wait on anything."""

    def cooled_down(self, deployment: Deployment, seconds: float) -> None: ...

    def paused(self, deployment: Deployment, replica: Replica, seconds: float,
               why: str) -> None: ...


async def serve(
    plan: Sequence[Deployment],
    attempt: Attempt[T],
    *,
    body: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
    listener: RoutingListener | None = None,
) -> tuple[Deployment, Replica, T]:
    """The first model of `plan` that answers, the replica that did, and its answer.

    Each model's replicas are tried in its strategy's order (`body` is the request, for
    prefix affinity), then the next model. On success the replica's slot stays taken: the
    caller releases it once the answer has been relayed. A failure the client caused
    (400) is raised at once; any other moves on to the next replica or model, and when
    none is left the most telling error is raised: the last real failure, else why the
    first one was skipped (cooling down, queue full, not ready).
    """
    failure: ModelportError | None = None
    skipped: ModelportError | None = None
    last = plan[-1]
    for deployment in plan:
        if not deployment.cooldown.available(clock()):
            skipped = skipped or _cooling_down(deployment, clock())
            continue
        replicas = deployment.route(body)
        if not replicas:
            try:
                deployment.acquire()  # says why nothing serves it
            except ModelportError as error:
                skipped = skipped or error
            continue
        for replica in replicas:
            try:
                deployment.acquire(replica)
            except (RateLimitError, ModelNotReadyError) as error:
                skipped = skipped or error
                continue
            try:
                result = await _with_retries(deployment, replica, attempt, sleep, jitter,
                                             wall_clock)
            except ModelportError as error:
                deployment.release(replica)
                kind = classify(error)
                if kind.counts_toward_cooldown:
                    replica_failed(deployment, replica, error, listener, clock(),
                                   retry_after_seconds(error, wall_clock()))
                if not kind.falls_back:
                    raise
                failure = error
                if replica is not replicas[-1]:
                    logger.warning("model '%s': replica %s failed (%s); trying the next "
                                   "replica", deployment.name, replica.name, error.message)
                elif deployment is not last:
                    logger.warning("model '%s' failed (%s); trying the next fallback",
                                   deployment.name, error.message)
                continue
            except BaseException:
                deployment.release(replica)  # cancelled (client gone) or a bug: never leak it
                raise
            deployment.cooldown.record_success()
            deployment.answered(replica, body)
            return deployment, replica, result
    error = failure or skipped
    assert error is not None, "an empty plan"
    raise error


def replica_failed(deployment: Deployment, replica: Replica, error: ModelportError,
                   listener: RoutingListener | None, now: float,
                   retry_after: float | None = None) -> None:
    """Count a failure the replica caused toward its model's cool-down and pause a
    replica someone else runs; `listener` hears of either starting."""
    cooldown = deployment.cooldown
    if cooldown.record_failure(now, retry_after):
        logger.warning("model '%s' cooled down for %.0fs after %d failed requests",
                       deployment.name, cooldown.remaining(now), cooldown.consecutive_failures)
        if listener is not None:
            listener.cooled_down(deployment, cooldown.remaining(now))
    paused = deployment.failed(replica, error)
    if paused and listener is not None:
        listener.paused(deployment, replica, paused, replica.detail)


async def _with_retries(
    deployment: Deployment,
    replica: Replica,
    attempt: Attempt[T],
    sleep: Callable[[float], Awaitable[None]],
    jitter: Callable[[], float],
    wall_clock: Callable[[], float],
) -> T:
    tries = 1
    while True:
        try:
            return await attempt(deployment, replica)
        except Exception as raised:  # noqa: BLE001 - every failure becomes a typed error here
            error = unexpected_error(raised, deployment.name)
            if error is not raised:  # an adapter or plugin tripping over an upstream's answer
                logger.error("model '%s': unexpected failure while getting an answer",
                             deployment.name, exc_info=raised)
            wait = deployment.retry.wait_before_retry(
                tries, error, jitter=jitter(), now_epoch=wall_clock())
            if wait is None:
                if error is raised:
                    raise
                raise error from raised
            logger.info("model '%s': try %d of %d failed (%s); retrying in %.2fs",
                        deployment.name, tries, deployment.retry.attempts, error.message, wait)
            await sleep(wait)
            tries += 1


def _cooling_down(deployment: Deployment, now: float) -> ModelNotReadyError:
    cooldown = deployment.cooldown
    seconds = cooldown.remaining(now)
    why = "failed requests through another gateway" if cooldown.elsewhere else \
        f"{cooldown.consecutive_failures} failed requests"
    return ModelNotReadyError(
        f"model '{deployment.name}' is cooling down after {why}; retry in {seconds:.0f}s",
        code="model_cooling_down",
        headers={"Retry-After": str(max(1, round(seconds)))},
    )
