"""Explicit gateway state handed to the app factory (no module-level globals)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from modelport.api.inflight import InFlight
from modelport.api.response_store import ResponseStore
from modelport.config import Config, ServerConfig
from modelport.providers.base import Provider
from modelport.routing.registry import ModelRegistry

if TYPE_CHECKING:
    from modelport.api.key_checks import FinishedRequests
    from modelport.api.metrics import GatewayMetrics, PeerStats
    from modelport.api.metrics_history import MetricsHistory
    from modelport.limits.admission import KeyLimiter
    from modelport.routing.shared_state import SharedRouting
    from modelport.store import KeyStore, UsageRecorder
    from modelport.workers.on_demand import ModelLoader
    from modelport.workers.remote_replicas import RemoteReplicas


class Service(Protocol):
    """Something started with the app and stopped with it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Reloader(Protocol):
    """Re-reads the config on SIGHUP or the admin API's reload (gateway.reload), or asks
    the primary process to (a follower)."""

    async def reload(self) -> Any: ...


class ProcessGroup(Protocol):
    """The other gateway processes of this machine (processes.primary.GatewayProcesses)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def replace(self, *args: Any) -> Any: ...


class PrimaryView(Protocol):
    """A follower's way to the primary's /metrics and metrics history (processes.follower)."""

    async def exposition(self, snapshot: dict[str, Any]) -> bytes: ...

    async def history(self, since: float | None) -> dict[str, Any]: ...


class Hooks:
    """A service made of what an object calls its start and its stop (either may be a plain
    function or a coroutine function, or absent)."""

    def __init__(self, name: str, start: Callable[[], Any] | None = None,
                 stop: Callable[[], Any] | None = None) -> None:
        self.name, self._start, self._stop = name, start, stop

    async def start(self) -> None:
        await _call(self._start)

    async def stop(self) -> None:
        await _call(self._stop)

    def __repr__(self) -> str:
        return f"Hooks({self.name!r})"


def _hooks(name: str, owner: object | None, start: str | None, stop: str | None) -> Hooks | None:
    if owner is None:
        return None
    return Hooks(name, getattr(owner, start) if start else None,
                 getattr(owner, stop, None) if stop else None)


async def _call(function: Callable[[], Any] | None) -> None:
    if function is not None:
        result = function()
        if inspect.isawaitable(result):
            await result


@dataclass
class GatewayState:
    config: Config
    registry: ModelRegistry
    clients: dict[str, Provider]
    # The workers' supervisor (a follower: the mirror of the primary's workers).
    lifecycle: Service | None = None
    started_at: float = field(default_factory=time.time)
    in_flight: InFlight = field(default_factory=InFlight)
    responses: ResponseStore = field(default_factory=ResponseStore)  # /v1/responses answers
    # Request bodies go to the debug log when asked for (log_prompts or --log-level debug);
    # decided once, not per request.
    log_bodies: bool = False
    # Made with the app (they know its routes), when metrics are on.
    metrics: GatewayMetrics | None = None
    metrics_history: MetricsHistory | None = None
    # With server.processes > 1: in the primary, the followers' request counts that its
    # /metrics adds to its own; in a follower, the channel through which its /metrics and
    # metrics history are the primary's. None in a single process.
    peer_metrics: PeerStats | None = None
    primary_metrics: PrimaryView | None = None
    limiter: KeyLimiter | None = None  # key limits: in this process, or shared in Redis
    finished: FinishedRequests | None = None  # settles holds and writes usage rows
    # Virtual keys and usage accounting, over the database `store` opens and closes with
    # the app (all three None in a state built without one).
    keys: KeyStore | None = None
    usage: UsageRecorder | None = None
    store: Service | None = None
    # Models on demand and configuration reload; None without local models or a file.
    loader: ModelLoader | None = None
    reloader: Reloader | None = None
    # Registered remote workers as replicas, with server.redis_url; None without it.
    remote_replicas: RemoteReplicas | None = None
    # The other gateway processes of this machine, started by the one the user started
    # when server.processes > 1; None otherwise.
    processes: ProcessGroup | None = None
    # With server.processes > 1: whether every gateway process of this machine listens on
    # the port (the primary looks at its followers, a follower hears it at each sync);
    # /health/ready waits for it. None in a single process.
    all_listening: Callable[[], bool] | None = None
    # Cool-downs and in-flight counts shared with other gateways through Redis, with
    # server.redis_url; None without it.
    shared_routing: SharedRouting | None = None
    # Background services started after the workers (the shared routing state, the stall
    # watch), in start order.
    services: list[Service] = field(default_factory=list)
    # Each takes the reloaded ServerConfig and updates the keys one gate accepts.
    key_gates: list[Callable[[ServerConfig], None]] = field(default_factory=list)

    def ordered_services(self) -> list[Service]:
        """Everything that lives as long as the app, in the order it starts; it stops in
        the reverse order. The database comes first (a wrong URL stops the start before
        any model loads, and it is closed last, after the last usage rows); the providers'
        connections close after every worker stopped; the other gateway processes start
        once the database is migrated and stop first, as they relay to the workers."""
        parts: list[Service | None] = [
            self.store,
            Hooks("providers", stop=self._close_providers),
            _hooks("key limits", self.limiter, "start", "close"),
            _hooks("usage and holds", self.finished, None, "drain"),
            self.lifecycle,
            _hooks("loader", self.loader, "start", "stop"),
            self.remote_replicas,
            *self.services,
            _hooks("reloader", self.reloader, "attach", "detach"),
            self.processes,
            _hooks("metrics history", self.metrics_history, "start", "stop"),
        ]
        return [part for part in parts if part is not None]

    async def _close_providers(self) -> None:
        providers = {id(p): p for p in (*self.clients.values(),
                                        *(p for d in self.registry for p in d.providers()))}
        for provider in providers.values():
            await provider.close()
