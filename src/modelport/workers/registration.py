"""Remote workers announce themselves in Redis; gateways read who is there.

A worker started with `--register redis://… --advertise http://host:port/v1` keeps one
key alive with a heartbeat: `modelport:worker:<model>:<id>`, holding where it answers and
how many requests it runs at once, with a TTL a few heartbeats long. A stopped worker
deletes its key; a killed one stops refreshing it and Redis drops it when the TTL runs
out. Every gateway with `server.redis_url` lists the keys on an interval and adds or drops
the workers as deployments of their model.

No secret goes into Redis: a gateway calls a registered worker with the `worker_key` its
own config gives that model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from modelport.errors import ConfigError
from modelport.routing.deployments import running_slots

logger = logging.getLogger("modelport.registration")

KEY_PREFIX = "modelport:worker:"
DEFAULT_TTL_S = 10.0


@dataclass(frozen=True)
class RemoteWorker:
    """A worker as the registry shows it."""

    model: str
    url: str  # the OpenAI base URL it answers on, e.g. http://10.0.0.5:8001/v1
    capacity: int = 1  # requests it runs at once
    engine: str = ""
    host: str = ""
    pid: int = 0

    @property
    def key(self) -> str:
        digest = hashlib.blake2b(self.url.encode(), digest_size=6).hexdigest()
        return f"{KEY_PREFIX}{self.model}:{digest}"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "RemoteWorker | None":
        """The entry, or None when it is not one of ours (another writer's key, a bad value)."""
        try:
            data = orjson.loads(raw)
            worker = cls(model=str(data["model"]), url=str(data["url"]),
                         capacity=max(1, int(data.get("capacity", 1))),
                         engine=str(data.get("engine", "")), host=str(data.get("host", "")),
                         pid=int(data.get("pid", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return worker if worker.url.startswith(("http://", "https://")) else None


def check_advertised_url(url: str) -> str:
    """The advertised base URL, refused when a gateway could not use it."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--advertise must be an http(s) URL such as http://HOST:PORT/v1 "
                          f"(got {url!r})")
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"--advertise {url}: give an address other machines can reach, "
                          "not a wildcard")
    return url if url.endswith("/v1") else url + "/v1"


async def _cancelled(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has ended (None: the task slot's value)."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _client(redis_url: str) -> Any:
    import redis.asyncio as redis

    return redis.from_url(redis_url)


async def _always() -> bool:
    return True


class Registration:
    """The worker side: keeps its key alive until `stop`, while `healthy()` says so (an
    unhealthy worker withdraws its key, and announces itself again once healthy)."""

    def __init__(self, redis_url: str, worker: RemoteWorker, ttl_s: float = DEFAULT_TTL_S,
                 healthy: Callable[[], Awaitable[bool]] = _always) -> None:
        self._redis_url = redis_url
        self.worker = worker
        self._ttl_ms = int(ttl_s * 1000)
        self._interval_s = ttl_s / 3
        self._healthy = healthy
        self._redis: Any = None
        self._task: asyncio.Task | None = None
        self.announced = False

    async def start(self) -> None:
        """Announce the worker once (a Redis that cannot be reached is a clear error at
        start-up), then keep announcing it in the background."""
        self._redis = _client(self._redis_url)
        try:
            await self._redis.ping()
            if await self._healthy():
                await self._announce()
        except Exception as error:
            await self._redis.aclose()
            raise ConfigError(f"could not register in Redis at {_safe(self._redis_url)}: "
                              f"{type(error).__name__}: {error}") from error
        logger.info("registered %s at %s (heartbeat every %.1fs)", self.worker.model,
                    self.worker.url, self._interval_s)
        self._task = asyncio.create_task(self._heartbeat(), name="worker-registration")

    async def stop(self) -> None:
        self._task = await _cancelled(self._task)
        if self._redis is not None:
            try:
                await self._withdraw()
            except Exception as error:  # noqa: BLE001 - the TTL removes it anyway
                logger.warning("could not unregister (the entry expires on its own): %s", error)
            await self._redis.aclose()
            self._redis = None

    async def _announce(self) -> None:
        await self._redis.set(self.worker.key, self.worker.to_json(), px=self._ttl_ms)
        self.announced = True

    async def _withdraw(self) -> None:
        await self._redis.delete(self.worker.key)
        self.announced = False

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                if await self._healthy():
                    if not self.announced:
                        logger.info("announcing %s in Redis", self.worker.url)
                    await self._announce()
                elif self.announced:
                    logger.warning("not answering its health check: withdrawn from Redis")
                    await self._withdraw()
                if failing:
                    logger.info("registration in Redis restored")
                failing = False
            except Exception as error:  # noqa: BLE001 - keep serving, keep trying
                if not failing:
                    logger.warning("could not refresh the registration in Redis: %s: %s",
                                   type(error).__name__, error)
                failing = True


Listener = Callable[[dict[str, RemoteWorker]], None]


class WorkerDirectory:
    """The gateway side: the registered workers, read every `interval_s`; `listener` is
    called with every worker (by key) each time the set changes."""

    def __init__(self, redis_url: str, listener: Listener, interval_s: float = 1.0) -> None:
        self._redis_url = redis_url
        self._listener = listener
        self._interval_s = interval_s
        self._redis: Any = None
        self._task: asyncio.Task | None = None
        self.workers: dict[str, RemoteWorker] = {}

    async def start(self) -> None:
        self._redis = _client(self._redis_url)
        self._task = asyncio.create_task(self._watch(), name="worker-directory")

    async def stop(self) -> None:
        self._task = await _cancelled(self._task)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def read(self) -> dict[str, RemoteWorker]:
        """The workers registered now."""
        keys = [key async for key in self._redis.scan_iter(match=KEY_PREFIX + "*", count=500)]
        if not keys:
            return {}
        values = await self._redis.mget(keys)
        found: dict[str, RemoteWorker] = {}
        for key, raw in zip(keys, values):
            worker = RemoteWorker.from_json(raw) if raw is not None else None
            if worker is not None:
                found[key.decode() if isinstance(key, bytes) else key] = worker
        return found

    async def _watch(self) -> None:
        failing = False
        while True:
            try:
                current = await self.read()
                failing = False
            except Exception as error:  # noqa: BLE001 - keep the last known set
                if not failing:
                    logger.warning("could not read the registered workers from Redis: %s: %s",
                                   type(error).__name__, error)
                failing = True
                current = self.workers
            if current != self.workers:
                for key in current.keys() - self.workers.keys():
                    logger.info("remote worker joined: %s at %s", current[key].model,
                                current[key].url)
                for key in self.workers.keys() - current.keys():
                    logger.info("remote worker left: %s at %s", self.workers[key].model,
                                self.workers[key].url)
                self.workers = current
                self._listener(dict(current))
            await asyncio.sleep(self._interval_s)


def this_worker(model: Any, url: str) -> RemoteWorker:
    """The registry entry of a worker serving `model` (its config) at `url`."""
    capacity = running_slots(model)
    return RemoteWorker(model=model.name, url=url, capacity=int(capacity),
                        engine=model.engine, host=socket.gethostname(), pid=os.getpid())


def _safe(url: str) -> str:
    """A Redis URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
