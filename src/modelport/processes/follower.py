"""A follower: a gateway process that relays to the primary's workers.

It serves from the same config as the primary, but its local replicas are the
primary's workers: before it accepts a connection it asks the primary for the replica
table (addresses, per-start secrets, states) and follows it every `SYNC_S` from then on
(a restarted worker, a model loaded or unloaded). What changes the workers goes to the
primary: loading a model on its first request, the admin API's load, unload and
reload, restarting a worker this process saw stall. The primary counts the follower's
requests in flight in its own idle and eviction decisions, from the report each sync
carries, and answers with the other processes' requests in flight on each worker (for
least_busy and prefix affinity here). The sync also carries this process's request
counts, so that /metrics and the console's charts, asked of any process, are the
server's: a follower answers them with the primary's (`PrimaryMetrics`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from modelport.api.state import GatewayState
from modelport.errors import ModelNotReadyError
from modelport.processes.control import ControlClient
from modelport.processes.wire import (
    CONTROL_SECRET_ENV,
    CONTROL_URL_ENV,
    apply_in_flight,
    apply_table,
    usage_report,
)
from modelport.providers.factory import local_worker_provider
from modelport.routing.deployments import Deployment, Replica
from modelport.routing.registry import ModelRegistry
from modelport.tools.support import tool_support
from modelport.workers.on_demand import LOADABLE, ModelLoader
from modelport.workers.stall_watch import StallWatch
from modelport.workers.supervisor import workers_memory

logger = logging.getLogger("modelport.processes")

SYNC_S = 0.25
_FIRST_SYNC_S = 30.0
_RETIRED_DRAIN_S = 60.0


def control_from_environment() -> ControlClient:
    """The channel to the primary, as the primary put it in this follower's environment."""
    return ControlClient(os.environ[CONTROL_URL_ENV], os.environ[CONTROL_SECRET_ENV])


def follow_primary(state: GatewayState, control: ControlClient) -> None:
    """Make a state built from the config (`gateway.build_state`) a follower's: its
    workers are the primary's, and so are loads, unloads and reloads."""
    mirror = ReplicaMirror(state, control)
    state.lifecycle = mirror  # its start (the first table) comes before serving
    state.loader = FollowerLoader(state.registry, control, mirror,
                                  lambda: state.config.server,
                                  lambda: state.config.models_dir_path())
    state.reloader = PrimaryReload(control)
    state.primary_metrics = PrimaryMetrics(control)
    for service in state.services:
        if isinstance(service, StallWatch):  # its supervisor here runs no worker
            service.restarter = PrimaryRestart(control, mirror)


class ReplicaMirror:
    """Keeps this process's local replicas what the primary's table says."""

    def __init__(self, state: GatewayState, control: ControlClient,
                 interval_s: float = SYNC_S) -> None:
        self._state = state
        self._control = control
        self._interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._unanswered_since: float | None = None
        self._keys_version: int | None = None
        if state.keys is not None:
            state.keys.listeners.append(self._keys_changed)
        self._all_listening = False
        state.all_listening = lambda: self._all_listening

    async def start(self) -> None:
        deadline = time.monotonic() + _FIRST_SYNC_S
        while True:
            try:
                await self.sync()
                break
            except ModelNotReadyError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        try:  # the last requests' counts (they are in flight no more, too)
            await self.sync()
        except Exception as error:  # noqa: BLE001 - the primary may be stopping as well
            logger.debug("last sync with the primary process: %s", error)
        await self._control.close()

    async def sync(self) -> None:
        metrics = self._state.metrics
        report = {"pid": os.getpid(), "models": usage_report(self._state.registry,
                                                             time.monotonic()),
                  "metrics": metrics.snapshot() if metrics is not None else None}
        answer = await self._control.sync(report)
        self.apply(answer["table"])
        apply_in_flight(self._state.registry, answer["in_flight"])
        if self._keys_version is not None and answer["keys"] != self._keys_version \
                and self._state.keys is not None:
            await self._state.keys.reload()  # a key was changed through another process
        self._keys_version = answer["keys"]
        self._all_listening = answer.get("listening", True)

    def apply(self, table: dict[str, Any]) -> None:
        apply_table(self._state.registry, table, self._readdress)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sync()
            except Exception as error:  # noqa: BLE001 - following must outlive any failure
                # The primary is busy or going away (then this process is stopped too), or
                # the database is away for a while: the table stays as it was meanwhile.
                apply_in_flight(self._state.registry, {})  # unknown now: route on our own
                # The primary's probe answers stop coming too, which must not make its
                # workers look stuck here (workers.stall_watch): they are not judged by them.
                for deployment in self._state.registry:
                    for replica in deployment.local_replicas:
                        replica.answered(0.0)
                if self._unanswered_since is None:
                    self._unanswered_since = time.monotonic()
                    logger.warning("could not follow the primary process: %s", error)
                continue
            if self._unanswered_since is not None:
                logger.info("following the primary process again (after %.1f s)",
                            time.monotonic() - self._unanswered_since)
                self._unanswered_since = None

    def _keys_changed(self) -> None:
        """A key was changed through this process: the primary reads them again and the
        other followers follow at their next sync."""
        self.in_background(self._control.keys_changed())

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    def _readdress(self, deployment: Deployment, replica: Replica) -> None:
        """The replica's worker has a new address or secret: requests go there through a
        new client; the old one is closed once its requests are done."""
        old = replica.provider
        config = deployment.config
        replica.use_provider(local_worker_provider(
            config, replica.base_url, replica.secret or "",
            tool_support(config, self._state.config.models_dir_path())))
        if self._state.clients.get(deployment.name) is old:
            self._state.clients[deployment.name] = replica.provider
        if old is not None:
            self.in_background(_close_when_idle(replica, old))


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("%s", task.exception())


async def _close_when_idle(replica: Replica, provider: Any) -> None:
    deadline = time.monotonic() + _RETIRED_DRAIN_S
    while replica.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await provider.close()


class PrimaryWorkers:
    """What a follower knows of the primary's workers (their pids, for the admin views)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def worker_memory(self, name: str) -> int | None:
        deployment = self._registry.named(name)
        return None if deployment is None else workers_memory(deployment)


class PrimaryRestart:
    """The stall watch's restarts, asked of the primary (which runs the workers): without
    it the next table would put the stuck worker back in rotation here."""

    def __init__(self, control: ControlClient, mirror: ReplicaMirror) -> None:
        self._control = control
        self._mirror = mirror

    def restart(self, replica: Replica, why: str) -> bool:
        self._mirror.in_background(self._ask(replica, why))
        return True

    async def _ask(self, replica: Replica, why: str) -> None:
        answer = await self._control.restart(replica.name, replica.pid, why, os.getpid())
        if not answer["restarted"]:
            logger.info("replica %s: the primary process had restarted its worker already",
                        replica.name)
        self._mirror.apply(answer["table"])


class FollowerLoader(ModelLoader):
    """The model loader's waiting (on-demand requests, the admin API), with the loading
    and unloading done by the primary. No idle sweep here: the primary's sees this
    process's use through the sync reports."""

    def __init__(self, registry: ModelRegistry, control: ControlClient, mirror: ReplicaMirror,
                 settings, models_dir) -> None:  # noqa: ANN001 (as ModelLoader's)
        super().__init__(registry, PrimaryWorkers(registry), settings,  # type: ignore[arg-type]
                         models_dir)
        self._control = control
        self._mirror = mirror

    def start(self) -> None:
        return None

    async def _begin_load(self, deployment: Deployment) -> bool:
        if deployment.status not in LOADABLE:
            return False
        # Answered once the primary has it ready (or with why it cannot load).
        self._mirror.apply(await self._control.load(deployment.name))
        return True

    async def unload(self, deployment: Deployment, drain_s: float, reason: str) -> None:
        self._mirror.apply(await self._control.unload(deployment.name, reason))


class PrimaryMetrics:
    """/metrics and the metrics history of a follower: the primary's, which add up every
    process's request counts (this one's sent fresh with the question)."""

    def __init__(self, control: ControlClient) -> None:
        self._control = control

    async def exposition(self, snapshot: dict[str, Any]) -> bytes:
        return await self._control.metrics(os.getpid(), snapshot)

    async def history(self, since: float | None) -> dict[str, Any]:
        return await self._control.history(since)


@dataclass
class ReloadAnswer:
    """The primary's reload report, as the admin API shows it."""

    report: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.report


class PrimaryReload:
    """Reloads are the primary's (it then replaces the followers, which start from the
    new file); asked here, the admin API's reload is passed on."""

    def __init__(self, control: ControlClient) -> None:
        self._control = control

    def attach(self) -> None:
        return None

    async def detach(self) -> None:
        return None

    def on_signal(self) -> None:
        logger.warning("SIGHUP received by a follower process and ignored: send it to the "
                       "primary (the process that was started), which reloads them all")

    async def reload(self) -> ReloadAnswer:
        return ReloadAnswer(await self._control.reload())
