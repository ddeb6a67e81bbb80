"""Serving one request from a list of models: retries on each, then the next one.

Everything here happens before the first byte is relayed to the client (for a stream,
`attempt` only opens it), so a retried or re-routed request never duplicates text.
The clock, the sleep and the jitter are parameters, so tests run it without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from modelport.errors import ModelNotReadyError, ModelportError, RateLimitError, unexpected_error
from modelport.routing.deployments import Deployment
from modelport.routing.retry import classify, retry_after_seconds

logger = logging.getLogger("modelport.routing")

T = TypeVar("T")
Attempt = Callable[[Deployment], Awaitable[T]]


async def serve(
    plan: Sequence[Deployment],
    attempt: Attempt[T],
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
) -> tuple[Deployment, T]:
    """The first model of `plan` that answers, and its answer.

    On success the model's slot stays taken: the caller releases it once the answer has
    been relayed. A failure the client caused (400) is raised at once; any other moves on
    to the next model, and when none is left the most telling error is raised: the last
    real failure, else why the first model was skipped (cooling down, queue full).
    """
    failure: ModelportError | None = None
    skipped: ModelportError | None = None
    for deployment in plan:
        if not deployment.cooldown.available(clock()):
            skipped = skipped or _cooling_down(deployment, clock())
            continue
        try:
            deployment.acquire()
        except (RateLimitError, ModelNotReadyError) as error:
            skipped = skipped or error
            continue
        try:
            result = await _with_retries(deployment, attempt, sleep, jitter, wall_clock)
        except ModelportError as error:
            deployment.release()
            kind = classify(error)
            if kind.counts_toward_cooldown and deployment.cooldown.record_failure(
                    clock(), retry_after_seconds(error, wall_clock())):
                logger.warning("model '%s' cooled down for %.0fs after %d failed requests",
                               deployment.name, deployment.cooldown.remaining(clock()),
                               deployment.cooldown.consecutive_failures)
            if not kind.falls_back:
                raise
            failure = error
            if deployment is not plan[-1]:
                logger.warning("model '%s' failed (%s); trying the next fallback",
                               deployment.name, error.message)
            continue
        except BaseException:
            deployment.release()  # cancelled (client gone) or a bug: never leak the slot
            raise
        deployment.cooldown.record_success()
        return deployment, result
    error = failure or skipped
    assert error is not None, "an empty plan"
    raise error


async def _with_retries(
    deployment: Deployment,
    attempt: Attempt[T],
    sleep: Callable[[float], Awaitable[None]],
    jitter: Callable[[], float],
    wall_clock: Callable[[], float],
) -> T:
    tries = 1
    while True:
        try:
            return await attempt(deployment)
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
    seconds = deployment.cooldown.remaining(now)
    return ModelNotReadyError(
        f"model '{deployment.name}' is cooling down after "
        f"{deployment.cooldown.consecutive_failures} failed requests; retry in {seconds:.0f}s",
        code="model_cooling_down",
        headers={"Retry-After": str(max(1, round(seconds)))},
    )
