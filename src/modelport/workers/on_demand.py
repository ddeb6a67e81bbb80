"""Models on demand: load on the first request, unload when idle or to make room.

A request that names an unloaded on-demand model waits for its worker (up to
`load_timeout_s`, then 503 with Retry-After while the load goes on); every request that
arrives meanwhile waits for the same load. Loading one more model than
`server.max_loaded` (or `server.memory_budget`, per device) allows first unloads idle
on-demand models, least recently used and cheapest to reload first (routing.eviction).
When only models with requests running or queued could make room, the load waits up to
`swap_max_wait_s` while those requests are served, then unloads them anyway (running
requests finish, queued ones wait for the next load); without `swap_max_wait_s` it is
refused at once with a 503 saying why. A model idle for `idle_unload_s` is unloaded by a
background sweep.

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
from modelport.errors import ModelNotFoundError, ModelNotReadyError
from modelport.routing.deployments import HOLDS_WORKER, Deployment, DeploymentStatus
from modelport.routing.eviction import Resident, choose_evictions
from modelport.routing.registry import ModelRegistry
from modelport.engines.gpus import gpu_memory_bytes
from modelport.workers.footprints import Footprints
from modelport.workers.supervisor import WorkerSupervisor

logger = logging.getLogger("modelport.loader")

_POLL_S = 0.05
_SWEEP_S = 0.5
# While a load waits for room (swap_max_wait_s), a model answered this recently is in use.
_STILL_IN_USE_S = 0.5
LOADABLE = (DeploymentStatus.UNLOADED, DeploymentStatus.FAILED)


class NoRoomToLoadError(ModelNotReadyError):
    code = "no_room_to_load"


class ModelLoader:
    def __init__(self, deployments: ModelRegistry, supervisor: WorkerSupervisor,
                 settings: Callable[[], ServerConfig], models_dir: Callable[[], Path]) -> None:
        self._deployments = deployments  # the registry: what is served right now
        self.supervisor = supervisor
        self._settings = settings
        self._room = asyncio.Lock()
        self._loading: dict[str, asyncio.Task] = {}
        self._loading_what: dict[str, Deployment] = {}
        self._unloading: dict[str, asyncio.Task] = {}
        self.footprints = Footprints(supervisor, models_dir,
                                     lambda: settings().memory_budgets())
        self._sweeper: asyncio.Task | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_idle())
        # Read the GPUs' sizes (nvidia-smi) off the event loop once, before a load needs them.
        asyncio.get_running_loop().run_in_executor(None, gpu_memory_bytes)

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
        self.footprints.loaded(deployment, time.monotonic() - started)
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
        budgets = server.memory_budgets()
        if server.max_loaded is None and budgets is None:
            return
        wait_s = incoming.config.swap_max_wait_s
        wait_s = server.swap_max_wait_s if wait_s is None else wait_s
        waits = wait_s is not None
        # How long the models in the way have been serving while this load waited (the
        # time one of them spends loading is not theirs to serve, and does not count).
        served_s = 0.0
        needs = self.footprints.of(incoming)
        while True:
            now = time.monotonic()
            holding = [d for d in self._deployments
                       if d.is_local and d is not incoming and d.status in HOLDS_WORKER
                       and d.status is not DeploymentStatus.UNLOADING]
            residents = [self._resident(d, now, waits) for d in holding]
            plan = choose_evictions(incoming.name, needs, residents, server.max_loaded,
                                    budgets, now, waits and served_s >= wait_s)
            if not plan.problem:
                break
            if self._deployments.named(incoming.name) is not incoming:
                raise ModelNotFoundError(f"model '{incoming.name}' was removed from the "
                                         "config", param="model")
            # A model still loading cannot go, but soon serves its requests and then can.
            starting = any(self._arriving(d) for d in holding)
            if not waits or not (plan.busy_would_fit or starting):
                raise NoRoomToLoadError(plan.problem, headers={"Retry-After": "5"})
            # The models in the way serve their running and queued requests meanwhile
            # (a burst alternating between models does not swap at every request).
            await asyncio.sleep(_POLL_S)
            if not starting:
                served_s += time.monotonic() - now
        by_name = {d.name: d for d in self._deployments}
        for name in plan.names:
            leaving = by_name[name]
            busy = leaving.in_flight or leaving.in_flight_elsewhere or leaving.queue.waiting
            self._begin_unload(leaving, server.drain_timeout_s if busy else 0.0,
                               f"evicted to load '{incoming.name}'")
        # Room is only free once the leaving workers (evicted here or unloading for any
        # other reason) have exited.
        await asyncio.gather(*(asyncio.shield(t) for t in list(self._unloading.values())),
                             return_exceptions=True)

    def _resident(self, deployment: Deployment, now: float, waits: bool) -> Resident:
        if not deployment.on_demand:
            why = "load: always"
        elif deployment.config.pin:
            why = "pin: true"
        elif deployment.status is not DeploymentStatus.READY:
            why = f"{deployment.status.value}"
        elif self._arriving(deployment):
            # Ready, but its load's waiters have not taken their slots yet: unloading it
            # now would leave them without the model they waited for.
            why = f"{deployment.waiting} requests waiting for its load"
        else:
            why = ""
        busy = (deployment.in_flight + deployment.in_flight_elsewhere
                + deployment.queue.waiting)
        if waits and now - deployment.last_used < _STILL_IN_USE_S:
            # Answered a moment ago: a client's next request is likely on its way, and a
            # load that may wait for this model should not take it in that gap.
            busy = max(busy, 1)
        return Resident(deployment.name, deployment.last_used, self.footprints.of(deployment),
                        why, busy, self.footprints.reload_s(deployment))

    def _arriving(self, deployment: Deployment) -> bool:
        """Still loading, or loaded with requests that waited for it not yet started."""
        return deployment.on_demand and not deployment.config.pin and (
            deployment.status is DeploymentStatus.STARTING or self.is_loading(deployment)
            or deployment.waiting > 0)

    def memory_bytes(self, deployment: Deployment) -> dict[str, int]:
        """What the model counts against server.memory_budget, per device."""
        return self.footprints.of(deployment)

    def file_bytes(self, deployment: Deployment) -> int:
        """Bytes of the model's files, once per local replica; 0 when unknown."""
        return self.footprints.file_bytes(deployment)

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
        # Its queued requests would wait for slots that will not free: they wait for its
        # next load instead (which they cause).
        deployment.queue.release_waiting()
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


def _retrieve(task: asyncio.Task) -> None:
    """Read a background task's outcome (its waiters got it) so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
