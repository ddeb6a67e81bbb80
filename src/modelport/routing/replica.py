"""One place a model is served from: a worker of ours, a configured URL, or a registered
remote worker, with its own health and load.

A served model (routing.deployments.Deployment) holds one or more replicas; strategies
order them per request, and the supervisor reports each worker's state into its replica.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class DeploymentStatus(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    UNRESPONSIVE = "unresponsive"  # running, but not answering its health checks
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"
    UNLOADED = "unloaded"  # an on-demand model without a worker; a request loads it
    UNLOADING = "unloading"  # its worker is being stopped (idle, evicted, or asked to)


FAILING = frozenset({DeploymentStatus.FAILED, DeploymentStatus.RESTARTING,
                     DeploymentStatus.UNRESPONSIVE})

# A worker in these states still runs, so its silence is watched (routing.progress).
_LIVE = frozenset({DeploymentStatus.READY, DeploymentStatus.UNRESPONSIVE})

# What a follower process takes over from the primary's replica besides status and address.
_MIRRORED = ("detail", "pid", "restarts", "retry_after_s", "last_error", "answered_at")

# Where a replica comes from.
LOCAL = "local"  # a worker process this gateway starts and watches
CONFIGURED = "url"  # a `deployments:` entry of the model: someone else runs it
REGISTERED = "registered"  # a remote worker that announced itself in Redis


@dataclass(eq=False)
class Replica:
    """`base_url` is the OpenAI-compatible address requests go to; `limit` bounds its
    requests in flight (running + queued, 429 past it), `capacity` is what it runs at once
    (what least_busy divides by)."""

    name: str
    base_url: str
    limit: int
    capacity: int = 1
    weight: float = 1.0
    origin: str = LOCAL
    provider: Any = None  # the Provider that sends requests to base_url
    port: int | None = None  # a local worker's port
    secret: str | None = None  # a local worker's per-start key
    index: int = 0  # a local worker's number among the model's replicas
    status: DeploymentStatus = DeploymentStatus.STARTING
    detail: str = ""
    in_flight: int = 0
    restarts: int = 0
    pid: int | None = None
    last_error: str = ""
    ready_since: float | None = None
    retry_after_s: int = 5
    # time.monotonic() after which a paused replica that is not ours is tried again (0:
    # not paused): nobody probes it, so the next request after the pause does.
    paused_until: float = 0.0
    # Requests in flight here through other gateways sharing this gateway's Redis (read in
    # the background, routing.shared_state): least_busy counts them with its own.
    remote_in_flight: int = 0
    # Its answers under way, for the stall watch (routing.progress): streams that started
    # and requests still waiting for their answer (or the start of their stream).
    streams: set = field(default_factory=set)
    pending: set = field(default_factory=set)
    # time.monotonic() when a worker of ours last proved alive (it became ready, it
    # answered a health probe); 0: not watched that way (not ours, not ready, or taken out
    # for a stall). The stall watch reads it. Comparable across the gateway's processes
    # (one system-wide monotonic clock), so followers take it over with the rest.
    answered_at: float = 0.0

    @property
    def is_ours(self) -> bool:
        return self.origin == LOCAL

    def set_status(self, status: DeploymentStatus, detail: str = "") -> None:
        self.status = status
        self.detail = detail
        if detail and status in FAILING:
            self.last_error = detail
        self.ready_since = time.monotonic() if status is DeploymentStatus.READY else None
        if status not in _LIVE:
            self.answered_at = 0.0  # no worker to hear from until it is ready again

    # -- named transitions: the only ways code outside routing changes a replica --------

    def worker_started(self, pid: int) -> None:
        """A worker process of ours was spawned; it is not serving until `set_status(READY)`."""
        self.pid = pid

    def worker_halted(self, status: DeploymentStatus, detail: str = "") -> None:
        """Its worker was stopped on purpose (unloaded, removed, stopped with the server)."""
        self.pid = None
        self.set_status(status, detail)

    def worker_failed(self, detail: str, retry_after_s: int) -> None:
        """Its worker cannot start; clients are told when to ask again."""
        self.set_status(DeploymentStatus.FAILED, detail)
        self.retry_after_s = retry_after_s

    def worker_restarting(self, detail: str, retry_after_s: int) -> None:
        """Its worker exited and is started again after a back-off."""
        self.restarts += 1
        self.set_status(DeploymentStatus.RESTARTING, detail)
        self.retry_after_s = retry_after_s

    def unresponsive(self, detail: str, retry_after_s: int) -> None:
        """Running but not answering: out of rotation until it answers again."""
        self.set_status(DeploymentStatus.UNRESPONSIVE, detail)
        self.retry_after_s = retry_after_s

    def answered(self, now: float) -> None:
        """Its worker proved alive (became ready, answered a health probe)."""
        self.answered_at = now

    def stalled(self, detail: str) -> None:
        """Taken out of rotation for a stall; judged again only once it is ready anew."""
        self.set_status(DeploymentStatus.UNRESPONSIVE, detail)
        self.answered_at = 0.0

    def row(self) -> dict[str, Any]:
        """What the primary process tells its followers of a worker it runs."""
        return {"name": self.name, "base_url": self.base_url, "secret": self.secret,
                "status": self.status.value, **{f: getattr(self, f) for f in _MIRRORED}}

    def mirror(self, row: Mapping[str, Any]) -> bool:
        """Take the primary's view of a worker it runs (a `row()` of its replica); whether
        the address or secret changed, so that the caller's provider must follow."""
        status = DeploymentStatus(row["status"])
        if status is not self.status:
            self.status = status
            self.ready_since = time.monotonic() if status is DeploymentStatus.READY else None
        for name in _MIRRORED:
            setattr(self, name, row[name])
        moved = (row["base_url"], row["secret"]) != (self.base_url, self.secret)
        if moved:
            self.base_url, self.secret = row["base_url"], row["secret"]
        return moved

    def use_provider(self, provider: Any) -> None:
        self.provider = provider

    def count_elsewhere(self, in_flight: int) -> None:
        """Requests in flight here through other gateways (least_busy counts them)."""
        self.remote_in_flight = in_flight

    def stream_started(self, progress: Any) -> None:
        self.streams.add(progress)

    def stream_ended(self, progress: Any) -> None:
        self.streams.discard(progress)

    def pause(self, why: str, seconds: float, now: float) -> None:
        """Out of rotation for `seconds` after a failure (a replica someone else runs)."""
        self.set_status(DeploymentStatus.UNRESPONSIVE, why)
        self.retry_after_s = max(1, round(seconds))
        self.paused_until = now + seconds

    def resume_if_due(self, now: float) -> bool:
        """Back in rotation when its pause is over; whether it is."""
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.set_status(DeploymentStatus.READY)
            return True
        return False

    def view(self) -> dict[str, Any]:
        """What /health, /admin/models and `modelport models` show of the replica."""
        return {"name": self.name, "url": self.base_url, "origin": self.origin,
                "state": self.status.value, "in_flight": self.in_flight,
                "in_flight_other_gateways": self.remote_in_flight,
                "restarts": self.restarts, "pid": self.pid,
                "last_error": self.last_error or None, "detail": self.detail or None}
