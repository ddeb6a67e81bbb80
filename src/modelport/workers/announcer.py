"""A worker's announcer: a small process beside `modelport worker --register`, keeping the
worker's entry in Redis while the worker answers its health check.

A process of its own rather than a thread of the worker: every engine is covered the same
way (vLLM replaces the worker process with its own server), and a worker busy computing
or stopped (SIGSTOP) stops being announced, because the announcer asks it, not itself.
It withdraws the entry and exits when the worker exits or when told to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys

import aiohttp

from modelport.workers.registration import DEFAULT_TTL_S, Registration, RemoteWorker

logger = logging.getLogger("modelport.registration")

REDIS_ENV = "MODELPORT_REGISTER_REDIS"  # may hold a password: never argv
WORKER_ENV = "MODELPORT_REGISTER_WORKER"


def start_announcer(redis_url: str, worker: RemoteWorker, health_url: str,
                    ttl_s: float = DEFAULT_TTL_S) -> subprocess.Popen:
    """The announcer of this process's worker, started now (it waits for health)."""
    env = {**os.environ, REDIS_ENV: redis_url, WORKER_ENV: worker.to_json().decode()}
    return subprocess.Popen(
        [sys.executable, "-m", "modelport.workers.announcer", "--health", health_url,
         "--parent", str(os.getpid()), "--ttl", str(ttl_s)], env=env)


async def _announce(redis_url: str, worker: RemoteWorker, health_url: str, parent: int,
                    ttl_s: float) -> None:
    timeout = aiohttp.ClientTimeout(total=min(2.0, ttl_s / 3))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def healthy() -> bool:
            try:
                async with session.get(health_url) as response:
                    return response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False

        registration = Registration(redis_url, worker, ttl_s, healthy)
        await registration.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set() and os.getppid() == parent:
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
        finally:
            await registration.stop()
            logger.info("withdrew %s from Redis", worker.url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--health", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = RemoteWorker.from_json(os.environ.pop(WORKER_ENV, ""))
    redis_url = os.environ.pop(REDIS_ENV, "")
    if worker is None or not redis_url:
        sys.exit("announcer: started without its worker or Redis URL")
    try:
        asyncio.run(_announce(redis_url, worker, args.health, args.parent, args.ttl))
    except Exception as error:  # noqa: BLE001 - one line, not a traceback
        sys.exit(f"announcer: {error}")


if __name__ == "__main__":
    main()
