"""Per-model serving state: where requests go, whether they may go, and how many are in flight."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from modelport.config import EMBEDDING_ENGINES, ModelConfig, OpenAIUpstreamModel, serves_rerank_only
from modelport.errors import ModelNotReadyError, ModelportError, RateLimitError
from modelport.providers.capabilities import Capabilities
from modelport.routing.cooldown import Cooldown, never_cools
from modelport.routing.prefix import request_prefix
from modelport.routing.replica import (
    CONFIGURED,
    LOCAL,
    REGISTERED,
    DeploymentStatus,
    Replica,
)
from modelport.routing.retry import NO_RETRIES, RetryPolicy
from modelport.admission.model_queue import ModelQueue, QueueSettings
from modelport.routing.strategies import (
    AffinityTable,
    least_busy,
    prefix_affinity,
    round_robin,
    weighted,
)

__all__ = ["Capabilities", "Deployment", "DeploymentStatus", "HOLDS_WORKER", "Replica",
           "request_limit", "retry_policy", "running_slots"]


# Statuses of a local model that holds (or is about to hold) a worker and its memory.
HOLDS_WORKER = frozenset({DeploymentStatus.STARTING, DeploymentStatus.READY,
                          DeploymentStatus.UNRESPONSIVE, DeploymentStatus.RESTARTING,
                          DeploymentStatus.UNLOADING})


class Deployment:
    """One served model as the gateway sees it: its replicas (workers of ours, configured
    URLs, registered remote workers) and the model-wide state (load policy, cool-down,
    retries, fallbacks).

    The model's status is its replicas' together: ready while any replica is. `limit`
    bounds each replica's requests in flight (running + queued); past it that replica
    answers 429 (and the next one is tried) instead of letting requests pile up.
    """

    def __init__(self, config: ModelConfig, base_url: str = "", limit: int = 1, *,
                 status: DeploymentStatus = DeploymentStatus.STARTING,
                 replicas: list[Replica] | None = None,
                 capabilities: Capabilities | None = None, load: str = "always",
                 retry: RetryPolicy | None = None, cooldown: Cooldown | None = None) -> None:
        self.config = config
        self.replicas: list[Replica] = replicas if replicas is not None else [
            Replica(f"{config.name}#0", base_url, limit, capacity=running_slots(config),
                    status=status, origin=LOCAL if _is_local(config) else CONFIGURED)]
        self._limit = limit
        self.capabilities = capabilities or Capabilities.for_config(config)
        self.retry = retry or retry_policy(config)
        self.cooldown = cooldown or cooldown_for(config)
        # "always" (started with the server) or "on_demand" (started by its first request).
        self.load = load
        # time.monotonic() of the last request taken or finished, or of the last load (0:
        # never): idle unloads and LRU eviction.
        self.last_used = 0.0
        # Requests waiting for this model to load: it is not evicted from under them.
        self.waiting = 0
        # Requests in flight at the other gateway processes of this machine
        # (server.processes), as they last reported: not idle, not evicted, drained.
        self.in_flight_elsewhere = 0
        # The deployments tried after this one, in order (filled in once all are built).
        self.fallbacks: tuple[Deployment, ...] = ()
        self._turn = 0
        self.affinity = AffinityTable()
        # Requests beyond its running slots wait here (admission.model_queue), in fair order.
        self.queue = ModelQueue(config.name, self.serving_slots, queue_settings(config))

    def __repr__(self) -> str:
        return f"Deployment({self.name!r}, {len(self.replicas)} replicas, {self.status.value})"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def base_url(self) -> str:
        return self.replicas[0].base_url if self.replicas else ""

    @property
    def is_local(self) -> bool:
        """Served by worker processes of ours (not an online API or an in-gateway plugin)."""
        return _is_local(self.config)

    @property
    def local_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.is_ours]

    @property
    def on_demand(self) -> bool:
        return self.load == "on_demand" and self.is_local

    @property
    def is_embedding(self) -> bool:
        return self.config.engine in EMBEDDING_ENGINES

    @property
    def kind(self) -> str:
        """What the model is for: chat, embedding or rerank."""
        if serves_rerank_only(self.config):
            return "rerank"
        return "embedding" if self.is_embedding else "chat"

    @property
    def upstream_model(self) -> str:
        if isinstance(self.config, OpenAIUpstreamModel):
            return self.config.upstream_model or self.config.name
        return self.config.name

    # -- the model's state, from its replicas -----------------------------------------

    @property
    def status(self) -> DeploymentStatus:
        replicas = self.replicas
        if len(replicas) == 1:
            return replicas[0].status
        if any(r.status is DeploymentStatus.READY for r in replicas):
            return DeploymentStatus.READY
        if not replicas:
            return DeploymentStatus.STARTING  # waiting for a registered worker
        return min((r.status for r in replicas), key=_STATUS_RANK.__getitem__)

    @property
    def detail(self) -> str:
        if not self.replicas:
            return "no replica: waiting for a registered worker"
        return next((r.detail for r in self.replicas if r.detail), "")

    @property
    def last_error(self) -> str:
        return next((r.last_error for r in self.replicas if r.last_error), "")

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    @property
    def restarts(self) -> int:
        return sum(r.restarts for r in self.replicas)

    @property
    def pid(self) -> int | None:
        return next((r.pid for r in self.replicas if r.pid is not None), None)

    @property
    def ready_since(self) -> float | None:
        return min((r.ready_since for r in self.replicas if r.ready_since is not None),
                   default=None)

    @property
    def retry_after_s(self) -> int:
        return min((r.retry_after_s for r in self.replicas), default=5)

    @property
    def limit(self) -> int:
        return self._limit

    def serving_slots(self) -> int:
        """Requests its ready replicas run at once: what its queue dispatches into."""
        replicas = self.replicas
        if len(replicas) == 1:  # the common case, on every request
            replica = replicas[0]
            return replica.capacity if replica.status is DeploymentStatus.READY else 0
        return sum(r.capacity for r in replicas if r.status is DeploymentStatus.READY)

    # -- named transitions: the only ways code outside routing changes a deployment -------

    def reconfigure(self, config: ModelConfig, limit: int, load: str) -> None:
        """New settings that need no new workers (a reload): in effect from the next request."""
        self.config, self.load, self._limit = config, load, limit
        self.queue.configure(queue_settings(config))
        for replica in self._moved_together():
            replica.limit = limit

    def link_fallbacks(self, targets: Sequence["Deployment"]) -> None:
        self.fallbacks = tuple(targets)

    def retry_in(self, seconds: int) -> None:
        """What its refusals tell clients (Retry-After) until its state changes again."""
        for replica in self._moved_together():
            replica.retry_after_s = seconds

    def loaded(self, now: float) -> None:
        """Its workers became ready after a load: it counts as just used (not evicted at once)."""
        self.last_used = now

    def used_elsewhere(self, in_flight: int, last_used: float) -> None:
        """The other gateway processes' use of it, as they last reported."""
        self.in_flight_elsewhere = in_flight
        self.last_used = max(self.last_used, last_used)

    @contextlib.contextmanager
    def waiting_for_load(self) -> Iterator[None]:
        """A request waits for this model to load: it is not evicted from under it."""
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    def set_status(self, status: DeploymentStatus, detail: str = "") -> None:
        """A change of the whole model (loading, unloading, restarting with new settings,
        removed): its workers move together; configured and registered replicas stay as
        they are unless the model is stopped."""
        for replica in self._moved_together(stopping=status is DeploymentStatus.STOPPED):
            replica.set_status(status, detail)

    def _moved_together(self, stopping: bool = False) -> list[Replica]:
        """The replicas the model's own settings and state changes apply to: its workers
        (an online model: its API and configured URLs), never registered workers, which
        come and go by themselves."""
        if stopping:
            return self.replicas
        return self.local_replicas or [r for r in self.replicas if r.origin != REGISTERED]

    # -- routing ------------------------------------------------------------------------

    def route(self, body: Mapping[str, Any] | None = None) -> Sequence[Replica]:
        """The replicas in the order this request tries them (the model's strategy)."""
        replicas = self.replicas
        if len(replicas) < 2:
            return replicas  # the common case: nothing to choose, nothing allocated
        self._turn += 1
        strategy = getattr(self.config, "strategy", "least_busy")
        if strategy == "round_robin":
            return round_robin(replicas, self._turn)
        if strategy == "weighted":
            return weighted(replicas, random.random())
        if strategy == "prefix_affinity":
            previous = self.affinity.last(request_prefix(body) if body is not None else None)
            return prefix_affinity(replicas, previous,
                                   getattr(self.config, "affinity_margin", 2), self._turn)
        return least_busy(replicas, self._turn)

    def answered(self, replica: Replica, body: Mapping[str, Any] | None) -> None:
        """`replica` served the request: its prefix is remembered there (prefix_affinity)."""
        if body is not None and len(self.replicas) > 1 and \
                getattr(self.config, "strategy", "") == "prefix_affinity":
            self.affinity.remember(request_prefix(body), replica.name)

    def acquire(self, replica: Replica | None = None) -> Replica:
        """Take a place for one request on `replica` (the first one when not named), or
        refuse it with 503/429 right away."""
        if replica is None:
            if not self.replicas:
                raise ModelNotReadyError(
                    f"model '{self.name}' has no replica serving it (no registered worker "
                    "yet); retry shortly", headers={"Retry-After": "5"})
            replica = self.replicas[0]
        if replica.status is not DeploymentStatus.READY and \
                not replica.resume_if_due(time.monotonic()):
            why = f" ({replica.detail})" if replica.detail else ""
            raise ModelNotReadyError(
                f"{self._who(replica)} is {replica.status.value}{why}; retry shortly",
                headers={"Retry-After": str(replica.retry_after_s)},
            )
        if replica.in_flight >= replica.limit:
            raise RateLimitError(
                f"{self._who(replica)} has {replica.in_flight} requests in flight, its limit; "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
        replica.in_flight += 1
        self.last_used = time.monotonic()
        return replica

    def failed(self, replica: Replica, error: ModelportError) -> float:
        """`replica` failed a request for a reason of its own (unreachable, 5xx, 429, a
        broken answer). One that is not ours is paused for REPLICA_PAUSE_S (the supervisor
        watches our workers); a model's only replica is left to its cool-down. Returns
        the seconds it is paused for (0: not paused, or already out of rotation)."""
        if replica.is_ours or len(self.replicas) < 2 or \
                replica.status is not DeploymentStatus.READY:
            return 0.0
        replica.pause(f"failed: {error.message[:200]}", REPLICA_PAUSE_S, time.monotonic())
        return REPLICA_PAUSE_S

    def release(self, replica: Replica | None = None) -> None:
        (replica or self.replicas[0]).in_flight -= 1
        self.last_used = time.monotonic()

    def _who(self, replica: Replica) -> str:
        if len(self.replicas) == 1:
            return f"model '{self.name}'"
        return f"model '{self.name}' (replica {replica.name})"

    # -- replicas that come and go --------------------------------------------------------

    def with_replicas(self, replicas: list[Replica]) -> list[Replica]:
        """Serve from `replicas` from now on; returns the ones dropped. The list is
        replaced, not changed, so a request going through the old one is not disturbed."""
        dropped = [r for r in self.replicas if r not in replicas]
        self.replicas = replicas
        for replica in dropped:
            self.affinity.forget_replica(replica.name)
        return dropped

    def providers(self) -> list[Any]:
        """Every replica's provider, each once (closed with the model)."""
        seen: dict[int, Any] = {}
        for replica in self.replicas:
            if replica.provider is not None:
                seen.setdefault(id(replica.provider), replica.provider)
        return list(seen.values())

    def view(self) -> list[dict[str, Any]]:
        return [replica.view() for replica in self.replicas]


# How long a replica someone else runs stays out of rotation after it failed a request.
REPLICA_PAUSE_S = 5.0

# Which status a model without a ready replica shows: the one closest to serving.
_STATUS_RANK = {status: rank for rank, status in enumerate((
    DeploymentStatus.READY, DeploymentStatus.STARTING, DeploymentStatus.RESTARTING,
    DeploymentStatus.UNRESPONSIVE, DeploymentStatus.UNLOADING, DeploymentStatus.UNLOADED,
    DeploymentStatus.FAILED, DeploymentStatus.STOPPED))}


def _is_local(config: ModelConfig) -> bool:
    return not isinstance(config, OpenAIUpstreamModel)


def running_slots(config: ModelConfig) -> int:
    """Requests a model's worker runs at once."""
    if isinstance(config, OpenAIUpstreamModel):
        return config.max_concurrency
    return (getattr(config, "engine_slots", None) or getattr(config, "parallel", None)
            or getattr(config, "batch_size", None) or 1)


def queue_settings(config: ModelConfig) -> QueueSettings:
    # A lane's slots are reserved ones the engine runs on top of `parallel`.
    reserved = config.reserved_slots + getattr(config, "lane_slots", 0)
    return QueueSettings(queue_max=config.max_queue, queue_timeout_s=config.queue_timeout_s,
                         reserved_slots=reserved, aging_s=config.queue_aging_s)


def retry_policy(config: ModelConfig) -> RetryPolicy:
    if not isinstance(config, OpenAIUpstreamModel):
        return NO_RETRIES  # a local worker that fails is restarted by its supervisor
    settings = config.retries
    return RetryPolicy(settings.attempts, settings.backoff, settings.max_backoff,
                       settings.max_retry_after)


def cooldown_for(config: ModelConfig) -> Cooldown:
    if not isinstance(config, OpenAIUpstreamModel):
        return never_cools()
    return Cooldown(config.cooldown.failures, config.cooldown.seconds)


def request_limit(config: ModelConfig) -> int:
    """Running plus queued requests a model accepts before answering 429."""
    if isinstance(config, OpenAIUpstreamModel):
        return config.max_concurrency + config.max_queue
    return running_slots(config) + config.max_queue
