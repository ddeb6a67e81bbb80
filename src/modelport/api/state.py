"""Explicit gateway state handed to the app factory (no module-level globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from modelport.api.inflight import InFlight
from modelport.api.response_store import ResponseStore
from modelport.config import Config
from modelport.routing.registry import ModelRegistry
from modelport.providers.base import Provider

if TYPE_CHECKING:
    from modelport.store import KeyStore, UsageRecorder


class Lifecycle(Protocol):
    """Something started with the app and stopped with it (the worker supervisor)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class GatewayState:
    config: Config
    registry: ModelRegistry
    clients: dict[str, Provider]
    lifecycle: Lifecycle | None = None
    started_at: float = field(default_factory=time.time)
    in_flight: InFlight = field(default_factory=InFlight)
    responses: ResponseStore = field(default_factory=ResponseStore)  # /v1/responses answers
    # Request bodies go to the debug log when asked for (log_prompts or --log-level debug);
    # decided once, not per request.
    log_bodies: bool = False
    metrics: Any = None  # api.metrics.GatewayMetrics, made with the app (it knows the routes)
    limiter: Any = None  # limits.admission.KeyLimiter over local or Redis counters
    # Virtual keys and usage accounting, over the database `store` opens and closes with
    # the app (all three None in a state built without one).
    keys: KeyStore | None = None
    usage: UsageRecorder | None = None
    store: Lifecycle | None = None
