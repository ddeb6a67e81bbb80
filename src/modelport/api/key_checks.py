"""What a virtual key may do, checked once its request's model is known, and what each
finished request leaves behind: its tokens against the key's limits, and a usage row.

Auth (api/auth.py) has already refused unknown, revoked and expired keys and put the key
on the request's access record; a request with a static key, the master key or no key at
all has no key here and meets none of these checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from modelport.api.access_log import AccessRecord
from modelport.errors import PermissionDeniedError
from modelport.limits.admission import Held, KeyLimiter
from modelport.limits.reservation import reservation
from modelport.routing.deployments import Deployment
from modelport.store.usage import UsageRecorder

logger = logging.getLogger("modelport.gateway")


def may_use(key: Any, deployment: Deployment) -> bool:
    return key is None or key.allows(deployment.name)


def allowed_plan(key: Any, plan: tuple[Deployment, ...]) -> tuple[Deployment, ...]:
    """The deployments of `plan` the key may use (the requested one was checked by `admit`)."""
    if key.models is None:
        return plan
    return tuple(deployment for deployment in plan if key.allows(deployment.name))


def _has_limits(key: Any) -> bool:
    return (key.rpm is not None or key.tpm is not None or key.max_parallel is not None
            or key.budget_tokens is not None)


def reserve_for(key: Any, requested: Deployment, body: dict[str, Any],
                max_tokens: int | None, generates: bool) -> int:
    """The tokens the request may spend, for a key with token limits (else 0: nothing to
    reserve, and the body is not measured)."""
    if key.tpm is None and key.budget_tokens is None:
        return 0
    return reservation(len(orjson.dumps(body)), max_tokens, generates,
                       getattr(requested.config, "context_length", None))


def admit(limiter: KeyLimiter, record: AccessRecord, requested: Deployment,
          body: dict[str, Any], max_tokens: int | None,
          generates: bool) -> Awaitable[None] | None:
    """Refuse the request (403 / 429) unless its key may send it now; else hold its place
    in the key's limits, with what it may spend reserved, until the request is done. Done
    at once when the limits are counted in this process (None); else the awaitable that
    finishes it."""
    key = record.key
    if key is None:
        return None
    if not key.allows(requested.name):
        allowed = ", ".join(key.models or ()) or "none"
        raise PermissionDeniedError(
            f"this API key may not use the model '{requested.name}' (allowed: {allowed})",
            param="model", code="model_not_allowed")
    if not _has_limits(key):
        return None
    reserve = reserve_for(key, requested, body, max_tokens, generates)
    admission = limiter.admit_now(key, reserve)
    if admission is None:
        return _admit_waiting(limiter, record, key, reserve)
    _hold(record, admission)
    return None


async def _admit_waiting(limiter: KeyLimiter, record: AccessRecord, key: Any,
                         reserve: int) -> None:
    _hold(record, await limiter.admit(key, reserve))


def _hold(record: AccessRecord, admission: Held) -> None:
    record.admission = admission
    record.extra_headers = admission.raw_headers


class FinishedRequests:
    """Observer of finished requests (see AccessLog): gives each key's hold back with the
    tokens really used, and writes one usage row per request that named a model."""

    def __init__(self, usage: UsageRecorder | None) -> None:
        self._usage = usage
        self._settling: set[asyncio.Task] = set()

    def __call__(self, record: AccessRecord) -> None:
        tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
        if record.admission is not None and not record.admission.settle_now(tokens):
            # Settling talks to Redis: off the response path, kept alive until done.
            task = asyncio.get_running_loop().create_task(record.admission.settle(tokens))
            self._settling.add(task)
            task.add_done_callback(self._settled)
        if self._usage is not None and record.requested is not None:
            key = record.key
            first_byte_s = record.first_byte_s
            self._usage.record_request(
                record.requested, record.model, record.path, record.status,
                key.id if key is not None else None, record.prompt_tokens or 0,
                record.completion_tokens or 0, record.cached_tokens or 0,
                record.latency_s * 1000,
                first_byte_s * 1000 if first_byte_s is not None else None,
                record.streamed, time.time() - record.latency_s)

    def _settled(self, task: asyncio.Task) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("could not count a request against its key's limits: %s",
                           task.exception())

    async def drain(self) -> None:
        """Wait for the holds still being given back (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
