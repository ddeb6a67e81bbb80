"""Explicit gateway state handed to the app factory (no module-level globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable
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
    metrics_history: Any = None  # api.metrics_history.MetricsHistory, when metrics are on
    # With server.processes > 1: in the primary, the followers' request counts
    # (api.metrics.PeerStats) that its /metrics adds to its own; in a follower, the channel
    # through which its /metrics and metrics history are the primary's (processes.follower.
    # PrimaryMetrics). None in a single process.
    peer_metrics: Any = None
    primary_metrics: Any = None
    limiter: Any = None  # limits.admission.KeyLimiter: in this process, or shared in Redis
    # Virtual keys and usage accounting, over the database `store` opens and closes with
    # the app (all three None in a state built without one).
    keys: KeyStore | None = None
    usage: UsageRecorder | None = None
    store: Lifecycle | None = None
    # Models on demand (workers.on_demand.ModelLoader) and configuration reload
    # (reload.ConfigReloader); None in a state built without local models or a file.
    loader: Any = None
    reloader: Any = None
    # Registered remote workers as replicas (workers.remote_replicas.RemoteReplicas), with
    # server.redis_url; None without it.
    remote_replicas: Any = None
    # The other gateway processes of this machine (processes.primary.GatewayProcesses),
    # started by the one the user started when server.processes > 1; None otherwise.
    processes: Any = None
    # Cool-downs and in-flight counts shared with other gateways through Redis
    # (routing.shared_state.SharedRouting), with server.redis_url; None without it.
    shared_routing: Any = None
    # Background tasks started with the app after everything else, stopped before it
    # (the shared routing state, the stall watch).
    services: list[Lifecycle] = field(default_factory=list)
    # Each takes the reloaded ServerConfig and updates the keys one gate accepts.
    key_gates: list[Callable[[Any], None]] = field(default_factory=list)
