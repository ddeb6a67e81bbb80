"""Registered remote workers as replicas of their models, on a gateway with
`server.redis_url`.

The worker directory (workers.registration) says who is registered whenever that
changes; each worker becomes a replica of the served local model of its name, called
with that model's `worker_key`, and is dropped when its registration ends (stopped, or
its heartbeat's TTL ran out). A dropped replica's requests in flight finish before its
client is closed. After a reload the current set is applied to the new deployments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from modelport.config import ModelConfig, OpenAIUpstreamModel
from modelport.providers.base import Provider
from modelport.providers.factory import local_worker_provider
from modelport.routing.deployments import Deployment, Replica
from modelport.routing.registry import ModelRegistry
from modelport.routing.replica import REGISTERED, DeploymentStatus
from modelport.tools.support import tool_support
from modelport.workers.registration import RemoteWorker, WorkerDirectory

logger = logging.getLogger("modelport.registration")

_DRAIN_S = 60.0


class RemoteReplicas:
    def __init__(self, registry: ModelRegistry, redis_url: str,
                 models_dir: Callable[[], Path], interval_s: float = 1.0) -> None:
        self._registry = registry
        self._models_dir = models_dir
        self._workers: dict[str, RemoteWorker] = {}
        self._directory = WorkerDirectory(redis_url, self.update, interval_s)
        self._closing: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self._directory.start()

    async def stop(self) -> None:
        await self._directory.stop()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def update(self, workers: dict[str, RemoteWorker]) -> None:
        """The directory's listener: `workers` is everyone registered now."""
        self._workers = workers
        self.apply()

    def apply(self) -> None:
        """Make every served local model's registered replicas the registered workers of
        its name (also after a reload replaced deployments)."""
        for deployment in self._registry:
            if isinstance(deployment.config, OpenAIUpstreamModel):
                continue
            wanted = {w.url: w for w in self._workers.values() if w.model == deployment.name}
            present = {r.base_url for r in deployment.replicas if r.origin == REGISTERED}
            if present == wanted.keys():
                continue
            kept = [r for r in deployment.replicas
                    if r.origin != REGISTERED or r.base_url in wanted]
            kept += [self._replica(deployment, wanted[url]) for url in wanted.keys() - present]
            for replica in deployment.with_replicas(kept):
                logger.info("model '%s': registered worker %s dropped", deployment.name,
                            replica.base_url)
                self._close_when_idle(replica)
            for url in wanted.keys() - present:
                logger.info("model '%s': registered worker %s added as a replica",
                            deployment.name, url)

    def _replica(self, deployment: Deployment, worker: RemoteWorker) -> Replica:
        config = deployment.config
        key = getattr(config, "worker_key", None)
        return Replica(
            f"{config.name}@{worker.url.split('://', 1)[-1].split('/', 1)[0]}", worker.url,
            worker.capacity + config.max_queue, capacity=worker.capacity, origin=REGISTERED,
            provider=_provider(config, worker.url, None if key is None else str.__str__(key),
                               self._models_dir()),
            status=DeploymentStatus.READY)

    def _close_when_idle(self, replica: Replica) -> None:
        task = asyncio.get_running_loop().create_task(_close_after_drain(replica))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _provider(config: ModelConfig, url: str, key: str | None, models_dir: Path) -> Provider:
    return local_worker_provider(config, url, key or "", tool_support(config, models_dir))


async def _close_after_drain(replica: Replica) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DRAIN_S
    while replica.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.1)
    replica.set_status(DeploymentStatus.STOPPED, "its registration ended")
    if replica.provider is not None:
        await replica.provider.close()

