"""Models on demand: load on the first request, unload when idle or to make room.

A request that names an unloaded on-demand model waits for its worker (up to
`load_timeout_s`, then 503 with Retry-After while the load goes on); every request that
arrives meanwhile waits for the same load. Loading one more model than
`server.max_loaded` (or `server.memory_budget`) allows first unloads the least recently
used idle on-demand models (routing.eviction); when none can go, the request gets a 503
saying why. A model idle for `idle_unload_s` is unloaded by a background sweep.

Eviction decisions are taken one at a time (a lock), and nothing awaits between a
waiter seeing its model ready and taking its slot, so a model is never evicted from
under a request that was waiting for it (`Deployment.waiting` guards the wait itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from modelport.config import ServerConfig
from modelport.errors import ConfigError, ModelNotFoundError, ModelNotReadyError
from modelport.config.locations import resolve_location
from modelport.routing.deployments import (
    HOLDS_WORKER,
    Deployment,
    DeploymentStatus,
    running_slots,
)
from modelport.routing.eviction import Resident, choose_evictions
from modelport.routing.registry import ModelRegistry
from modelport.routing.residency import footprint, gguf_kv_cache_bytes
from modelport.workers.supervisor import WorkerSupervisor

logger = logging.getLogger("modelport.loader")

_POLL_S = 0.05
_SWEEP_S = 0.5
LOADABLE = (DeploymentStatus.UNLOADED, DeploymentStatus.FAILED)


class NoRoomToLoadError(ModelNotReadyError):
    code = "no_room_to_load"


class ModelLoader:
    def __init__(self, deployments: ModelRegistry, supervisor: WorkerSupervisor,
                 settings: Callable[[], ServerConfig], models_dir: Callable[[], Path]) -> None:
        self._deployments = deployments  # the registry: what is served right now
        self.supervisor = supervisor
        self._settings = settings
        self._models_dir = models_dir
        self._room = asyncio.Lock()
        self._loading: dict[str, asyncio.Task] = {}
        self._loading_what: dict[str, Deployment] = {}
        self._unloading: dict[str, asyncio.Task] = {}
        self._file_bytes: dict[tuple[str, str], int] = {}
        self._kv_bytes: dict[tuple[str, str, int], int] = {}
        self._sweeper: asyncio.Task | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_idle())

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._loading.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Unloads are not cancelled: one stopped halfway would leave its worker running.
        await asyncio.gather(*self._unloading.values(), return_exceptions=True)

    # -- loading -------------------------------------------------------------------------

    async def ensure_loaded(self, deployment: Deployment, wait_for_start: bool = True) -> None:
        """Return once an on-demand model is ready (loading it if needed). A model whose
        workers of ours are starting (the gateway's start, a reload) is waited for too,
        within its queue_timeout_s, when `wait_for_start`: a client of a gateway that was
        just restarted waits seconds instead of being refused. Other states are left to
        `Deployment.acquire`, which answers for them."""
        if deployment.status is DeploymentStatus.READY:
            return
        if not deployment.on_demand:
            if wait_for_start and deployment.status is DeploymentStatus.STARTING \
                    and deployment.local_replicas:
                await self._until_started(deployment)
            return
        timeout = deployment.config.load_timeout_s or self._settings().load_timeout_s
        with deployment.waiting_for_load():
            try:
                await asyncio.wait_for(self._until_ready(deployment), timeout)
            except asyncio.TimeoutError:
                raise ModelNotReadyError(
                    f"model '{deployment.name}' is still loading after {timeout:g} s "
                    "(load_timeout_s); retry shortly", code="model_loading",
                    headers={"Retry-After": str(max(1, round(timeout / 4)))}) from None

    async def _until_started(self, deployment: Deployment) -> None:
        deadline = time.monotonic() + deployment.config.queue_timeout_s
        while deployment.status is DeploymentStatus.STARTING and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)

    async def load(self, deployment: Deployment) -> None:
        """Load a model (any local one; the admin API's load) and wait until it is ready."""
        await self._until_ready(deployment)

    def is_loading(self, deployment: Deployment) -> bool:
        task = self._load_of(deployment)
        return task is not None and not task.done()

    def _load_of(self, deployment: Deployment) -> asyncio.Task | None:
        # By name, but only this deployment's: a reload may replace it under the same name.
        task = self._loading.get(deployment.name)
        return task if task is not None and self._loading_what.get(deployment.name) is deployment \
            else None

    def start_loading(self, deployment: Deployment) -> asyncio.Task | None:
        """Begin loading and return the load (shared by every caller until it ends); None
        when the model is not in a state to be loaded (ready, or moving by itself)."""
        task = self._load_of(deployment)
        if deployment.status not in LOADABLE:
            # A finished load has nothing more to say (awaiting it would not even yield).
            return task if task is not None and not task.done() else None
        if task is None or task.done():
            task = asyncio.create_task(self._load(deployment))
            task.add_done_callback(_retrieve)
            self._loading[deployment.name] = task
            self._loading_what[deployment.name] = deployment
        return task

    async def _until_ready(self, deployment: Deployment) -> None:
        while deployment.status is not DeploymentStatus.READY:
            if (deployment.status is DeploymentStatus.STOPPED
                    or self._deployments.named(deployment.name) is not deployment):
                raise ModelNotFoundError(f"model '{deployment.name}' was removed from the "
                                         "config", param="model")
            task = self.start_loading(deployment)
            if task is not None:
                await asyncio.shield(task)
            else:  # starting, unloading, restarting: its state moves on by itself
                await asyncio.sleep(_POLL_S)

    async def _load(self, deployment: Deployment) -> None:
        if not await self._begin_load(deployment):
            return
        started = time.monotonic()
        while deployment.status is not DeploymentStatus.READY:
            if deployment.status is DeploymentStatus.FAILED:
                raise ModelNotReadyError(
                    f"model '{deployment.name}' failed to load: {deployment.detail}",
                    code="model_load_failed", headers={"Retry-After": "30"})
            if deployment.status in (DeploymentStatus.UNLOADED, DeploymentStatus.STOPPED):
                raise ModelNotReadyError(
                    f"model '{deployment.name}' was unloaded while it loaded; retry",
                    headers={"Retry-After": "1"})
            await asyncio.sleep(_POLL_S)
        deployment.loaded(time.monotonic())
        logger.info("model '%s': loaded in %.1f s", deployment.name, time.monotonic() - started)

    async def _begin_load(self, deployment: Deployment) -> bool:
        """Start the model's workers, making room first; False when it was loaded
        meanwhile (the load then only waits for it)."""
        async with self._room:
            if deployment.status not in LOADABLE:
                return False
            await self._make_room(deployment)
            logger.info("model '%s': loading on demand", deployment.name)
            self.supervisor.launch(deployment)
        return True

    async def _make_room(self, incoming: Deployment) -> None:
        server = self._settings()
        if server.max_loaded is None and server.memory_budget is None:
            return
        residents = [self._resident(d) for d in self._deployments
                     if d.is_local and d is not incoming and d.status in HOLDS_WORKER
                     and d.status is not DeploymentStatus.UNLOADING]
        plan = choose_evictions(incoming.name, self.memory_bytes(incoming), residents,
                                server.max_loaded, server.memory_budget)
        if plan.problem:
            raise NoRoomToLoadError(plan.problem, headers={"Retry-After": "5"})
        by_name = {d.name: d for d in self._deployments}
        for name in plan.names:
            self._begin_unload(by_name[name], 0.0, f"evicted to load '{incoming.name}'")
        # Room is only free once the leaving workers (evicted here or unloading for any
        # other reason) have exited.
        await asyncio.gather(*(asyncio.shield(t) for t in list(self._unloading.values())),
                             return_exceptions=True)

    def _resident(self, deployment: Deployment) -> Resident:
        if not deployment.on_demand:
            why = "load: always"
        elif deployment.config.pin:
            why = "pin: true"
        elif busy := deployment.in_flight + deployment.in_flight_elsewhere + deployment.waiting:
            why = f"{busy} requests in flight"
        elif deployment.status is not DeploymentStatus.READY:
            why = f"{deployment.status.value}"
        else:
            why = ""
        return Resident(deployment.name, deployment.last_used, self.memory_bytes(deployment),
                        why)

    def memory_bytes(self, deployment: Deployment) -> int:
        """What the model counts against server.memory_budget: its files and, for a GGUF
        model, its KV cache (context_length x its slots, a lane's included), per local replica; what its
        workers were measured holding when that is more."""
        replicas = max(1, len(deployment.local_replicas))
        measured = self.supervisor.worker_memory(deployment.name) if deployment.pid else None
        return footprint(self.file_bytes(deployment), self._kv_cache(deployment) * replicas,
                         measured)

    def _kv_cache(self, deployment: Deployment) -> int:
        config = deployment.config
        path = getattr(config, "path", None)
        if config.engine != "llamacpp" or path is None:
            return 0
        tokens = (getattr(config, "context_length", None) or 0) * running_slots(config)
        key = (deployment.name, path, tokens)
        if key not in self._kv_bytes:
            self._kv_bytes[key] = _gguf_kv(path, self._models_dir(), deployment.name, tokens)
        return self._kv_bytes[key]

    def file_bytes(self, deployment: Deployment) -> int:
        """Bytes of the model's files (what memory_budget counts), once per local replica
        (each worker loads its own copy); 0 when unknown."""
        path = getattr(deployment.config, "path", None)
        if path is None:
            return 0
        key = (deployment.name, path)
        if key not in self._file_bytes:
            self._file_bytes[key] = _size_of(path, self._models_dir(), deployment.name)
        return self._file_bytes[key] * max(1, len(deployment.local_replicas))

    # -- unloading -----------------------------------------------------------------------

    async def unload(self, deployment: Deployment, drain_s: float, reason: str) -> None:
        """Stop the model's worker once its requests finish (or `drain_s` passes)."""
        task = self._begin_unload(deployment, drain_s, reason)
        if task is not None:
            await asyncio.shield(task)

    def _begin_unload(self, deployment: Deployment, drain_s: float,
                      reason: str) -> asyncio.Task | None:
        task = self._unloading.get(deployment.name)
        if task is not None and not task.done():
            return task
        if deployment.status not in HOLDS_WORKER:
            return None
        task = asyncio.create_task(self._unload(deployment, drain_s, reason))
        task.add_done_callback(_retrieve)
        self._unloading[deployment.name] = task
        return task

    async def _unload(self, deployment: Deployment, drain_s: float, reason: str) -> None:
        deployment.set_status(DeploymentStatus.UNLOADING, reason)
        deployment.retry_in(2)
        deadline = time.monotonic() + drain_s
        while (deployment.in_flight or deployment.in_flight_elsewhere) \
                and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        pid = deployment.pid
        await self.supervisor.halt(deployment, DeploymentStatus.UNLOADED)
        logger.info("model '%s': unloaded, worker pid %s stopped (%s)", deployment.name, pid,
                    reason)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            default = self._settings().idle_unload_s
            now = time.monotonic()
            for deployment in list(self._deployments):
                idle_s = deployment.config.idle_unload_s or default
                if (idle_s and deployment.on_demand
                        and deployment.status is DeploymentStatus.READY
                        and not deployment.in_flight and not deployment.waiting
                        and not deployment.in_flight_elsewhere
                        and now - deployment.last_used >= idle_s):
                    self._begin_unload(deployment, 0.0, f"idle for {idle_s:g} s (idle_unload_s)")


def _size_of(location: str, models_dir: Path, name: str) -> int:
    try:
        path = resolve_location(location, models_dir, name)
    except ConfigError:
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _gguf_kv(location: str, models_dir: Path, name: str, tokens: int) -> int:
    try:
        path = resolve_location(location, models_dir, name)
        return gguf_kv_cache_bytes(path, tokens) if path.is_file() else 0
    except (ConfigError, OSError, ValueError):
        return 0  # unreadable: counted by its file alone


def _retrieve(task: asyncio.Task) -> None:
    """Read a background task's outcome (its waiters got it) so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
