"""The stall watch: a replica whose answers stopped coming is stuck, whether it still
answers its health checks (an engine loop that hangs while its HTTP server lives on) or
not (a stopped or hung worker process).

A few times per second (every `server.health_check_interval_s`, at most 0.5 s apart) it
reads the progress marks of every replica of a local model (routing.progress). With
`stall_timeout_s` the model's, else `server.worker_stall_timeout_s`, a replica is stuck
when
- its started streams have all waited `stall_timeout_s` or longer for their next bytes, or
- it is a worker of ours that has neither answered a health probe nor sent a stream any
  bytes for `stall_timeout_s` (never less than two health-check intervals, so a healthy
  worker between two probes is not taken for a stuck one).
A stuck replica is taken out of rotation at once: its streams end with a `replica_stalled`
error event and `[DONE]`, its requests still waiting for an answer (or for the start of
their stream) go to another replica or end with a 503; a worker of ours is killed with
SIGKILL (which a stopped process cannot ignore) and restarted by its supervisor, back once
it answers its health checks; a replica someone else runs is paused like after any other
failure (and other gateways are told, with `server.redis_url`).

Online models (engine: openai) are not watched: their `read_timeout` bounds every silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from modelport.errors import ReplicaStalledError
from modelport.routing.deployments import REPLICA_PAUSE_S, Deployment, Replica
from modelport.routing.failover import RoutingListener
from modelport.routing.progress import last_sign_of_life, silence, stall_timeout
from modelport.routing.registry import ModelRegistry
from modelport.routing.replica import DeploymentStatus

logger = logging.getLogger("modelport.supervisor")

# The longest between two checks: a stall is acted on within this of its timeout.
_CHECK_EVERY_S = 0.5


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
            await asyncio.sleep(min(self._server().health_check_interval_s, _CHECK_EVERY_S))
            self.check()

    def check(self) -> list[Replica]:
        """Take every stuck replica out of rotation; the ones taken out."""
        now, server = self._clock(), self._server()
        stuck: list[Replica] = []
        for deployment in self._registry:
            if not deployment.is_local:
                continue
            timeout = stall_timeout(deployment.config, server)
            # A healthy worker is heard from once per probe interval (plus the probe).
            unheard_limit = max(timeout, 2 * server.health_check_interval_s)
            for replica in deployment.replicas:
                why = _why_stuck(replica, now, timeout, unheard_limit)
                if why is not None:
                    self._take_out(deployment, replica, why, now)
                    stuck.append(replica)
        return stuck

    def _take_out(self, deployment: Deployment, replica: Replica, why: str,
                  now: float) -> None:
        streams, pending = len(replica.streams), len(replica.pending)
        if replica.is_ours:
            replica.stalled(why + "; restarting it")
            self.restarter.restart(replica, why)
        else:
            replica.pause(why, REPLICA_PAUSE_S, now)
            if self._listener is not None:
                self._listener.paused(deployment, replica, REPLICA_PAUSE_S, why)
        logger.error("replica %s: %s; taken out of rotation, ending its %d stream(s) and "
                     "%d waiting request(s)", replica.name, why, streams, pending)
        error = ReplicaStalledError(
            f"model '{deployment.name}' (replica {replica.name}) stopped sending ({why}); "
            "the replica was taken out of rotation",
            headers={"Retry-After": str(replica.retry_after_s)})
        for stream in list(replica.streams):
            if stream.stop is not None:
                stream.stop(error)
        for waiting in list(replica.pending):
            waiting.stop(error)


def _why_stuck(replica: Replica, now: float, timeout: float,
               unheard_limit: float) -> str | None:
    """Why `replica` counts as stuck now, or None."""
    if replica.streams and replica.status is DeploymentStatus.READY:
        silent = silence(replica.streams, now, timeout)
        if silent is not None:
            heard = " while it answered its health checks" \
                if replica.answered_at and now - replica.answered_at < timeout else ""
            return (f"stalled: its started answers got no bytes for {silent:.0f} s "
                    f"(stall_timeout_s: {timeout:g} s){heard}")
    if replica.answered_at:  # a worker of ours, running
        unheard = now - last_sign_of_life(replica.answered_at, replica.streams)
        if unheard >= unheard_limit:
            return (f"stalled: no answer to its health checks and no bytes on its streams "
                    f"for {unheard:.1f} s (stall_timeout_s: {timeout:g} s)")
    return None
