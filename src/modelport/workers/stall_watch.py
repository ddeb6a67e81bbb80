"""The stall watch: a replica whose answers stopped coming is stuck, even when it still
answers its health checks (an engine loop that hangs while its HTTP server lives on).

Once per `server.health_check_interval_s` it reads the progress marks the relay keeps for
each started stream (routing.progress) on every replica of a local model. A replica whose
streams have all waited `stall_timeout_s` (the model's, else
`server.worker_stall_timeout_s`) or longer for their next bytes is taken out of rotation
at once; its streams end with an error event and `[DONE]`, its requests still waiting
for an answer go to another replica or end with a 504; a worker of ours is restarted by
its supervisor (and is back once it answers its health checks), a replica someone else
runs is paused like after any other failure (and other gateways are told, with
`server.redis_url`).

Online models (engine: openai) are not watched: their `read_timeout` bounds every silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from modelport.errors import UpstreamTimeoutError
from modelport.routing.deployments import REPLICA_PAUSE_S, Deployment, Replica
from modelport.routing.failover import RoutingListener
from modelport.routing.progress import silence, stall_timeout
from modelport.routing.registry import ModelRegistry
from modelport.routing.replica import DeploymentStatus

logger = logging.getLogger("modelport.supervisor")


class Restarter(Protocol):
    """Restarts a stuck worker of ours: the supervisor, or in a follower process the
    primary, asked through the control channel (processes.follower)."""

    def restart(self, replica: Replica, why: str) -> bool: ...


class StallWatch:
    def __init__(self, registry: ModelRegistry, supervisor: Restarter,
                 server: Callable[[], Any], listener: RoutingListener | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self.restarter = supervisor  # a follower's asks the primary (processes.follower)
        self._server = server  # the current ServerConfig (a reload may change it)
        self._listener = listener
        self._clock = clock
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stall-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._server().health_check_interval_s)
            self.check()

    def check(self) -> list[Replica]:
        """Take every stuck replica out of rotation; the ones taken out."""
        now, server = self._clock(), self._server()
        stuck: list[Replica] = []
        for deployment in self._registry:
            if not deployment.is_local:
                continue
            timeout = stall_timeout(deployment.config, server)
            for replica in deployment.replicas:
                if not replica.streams or replica.status is not DeploymentStatus.READY:
                    continue
                silent = silence(replica.streams, now, timeout)
                if silent is not None:
                    self._take_out(deployment, replica, silent, timeout, now)
                    stuck.append(replica)
        return stuck

    def _take_out(self, deployment: Deployment, replica: Replica, silent: float,
                  timeout: float, now: float) -> None:
        streams, pending = len(replica.streams), len(replica.pending)
        why = (f"stalled: its started answers got no bytes for {silent:.0f} s "
               f"(stall_timeout_s: {timeout:g} s)")
        if replica.is_ours:
            why += " while it answered its health checks"
            replica.set_status(DeploymentStatus.UNRESPONSIVE, why + "; restarting it")
            self.restarter.restart(replica, why)
        else:
            replica.pause(why, REPLICA_PAUSE_S, now)
            if self._listener is not None:
                self._listener.paused(deployment, replica, REPLICA_PAUSE_S, why)
        logger.error("replica %s: %s; taken out of rotation, ending its %d stream(s) and "
                     "%d waiting request(s)", replica.name, why, streams, pending)
        error = UpstreamTimeoutError(
            f"model '{deployment.name}' (replica {replica.name}) stopped sending: no bytes "
            f"for {silent:.0f} s (stall_timeout_s); the replica was taken out of rotation",
            code="replica_stalled", headers={"Retry-After": str(replica.retry_after_s)})
        for stream in list(replica.streams):
            if stream.stop is not None:
                stream.stop(error)
        for waiting in list(replica.pending):
            waiting.stop(error)
