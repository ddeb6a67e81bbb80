"""Starts one worker process per local model, waits for readiness, restarts the dead.

A worker that dies is restarted with exponential backoff while every other model keeps
serving; requests to the dead one get 503 with Retry-After meanwhile (its deployment is
not READY). Workers live in their own process group (Ctrl-C reaches only the gateway,
which stops them in order) and are asked by the kernel to exit if the gateway dies.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import signal
import sys
import time

import aiohttp
import orjson

from modelport.config import Config
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.workers.lifetime import die_with_parent
from modelport.workers.worker_auth import WORKER_SECRET_ENV

logger = logging.getLogger("modelport.supervisor")

WORKER_SPEC_ENV = "MODELPORT_WORKER_SPEC"
WORKER_CONFIG_ERROR_EXIT = 2  # `modelport worker` exits with this on a ConfigError
_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 60.0
_STOP_GRACE_S = 10.0
# A path no server serves: our worker answers it 401 without its secret and something
# else (404) with it; a server that answers both the same way is not the worker we started.
_IDENTITY_PATH = "/v1/modelport-identity"


def worker_spec(config: Config, deployment: Deployment) -> str:
    """The one-model config a spawned worker runs with (already interpolated and resolved)."""
    return orjson.dumps({
        "server": {"models_dir": str(config.models_dir_path()),
                   "max_body_bytes": config.server.max_body_bytes},
        "models": [deployment.config.model_dump(mode="json")],
        "base_dir": config.base_dir,
    }).decode()


class WorkerProcess:
    """One running worker: its process, the tail of its output, how long it has been up."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.started = time.monotonic()
        self.output_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._reader = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.output_tail.append(line)
                logger.debug("[%s] %s", self.name, line)

    async def wait(self) -> int:
        code = await self.process.wait()
        try:
            await asyncio.wait_for(self._reader, 2)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        return code


class WorkerSupervisor:
    def __init__(self, config: Config, deployments: list[Deployment], ports: dict[str, int],
                 worker_secrets: dict[str, str]):
        self.config = config
        self.deployments = deployments
        self.ports = ports
        # One per model and gateway run, also held by that model's provider; a restarted
        # worker gets the same one, so the provider's long-lived client keeps working.
        self._secrets = worker_secrets
        self._tasks: list[asyncio.Task] = []
        self._running: dict[str, WorkerProcess] = {}
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No kept-alive probe connections: one left open to a worker that then dies holds
        # its port (FIN_WAIT) and can make the restarted worker's bind fail.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                              connector=aiohttp.TCPConnector(force_close=True))
        for deployment in self.deployments:
            self._tasks.append(asyncio.create_task(self._keep_running(deployment)))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        workers = list(self._running.values())
        for worker in workers:
            _signal_group(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                _signal_group(worker.process, signal.SIGKILL)
                await worker.process.wait()
        for deployment in self.deployments:
            deployment.set_status(DeploymentStatus.STOPPED)
        logger.info("all workers stopped")
        if self._session is not None:
            await self._session.close()

    async def worker_metrics(self, name: str) -> str | None:
        """The worker's own Prometheus metrics (llama.cpp serves /metrics), or None."""
        deployment = next((d for d in self.deployments if d.name == name), None)
        if deployment is None or self._session is None:
            return None
        url = deployment.base_url.removesuffix("/v1") + "/metrics"
        headers = {"Authorization": f"Bearer {self._secrets[name]}"}
        try:
            async with self._session.get(url, headers=headers) as response:
                return await response.text() if response.status == 200 else None
        except aiohttp.ClientError:
            return None

    def worker_pid(self, name: str) -> int | None:
        worker = self._running.get(name)
        return worker.process.pid if worker else None

    async def _spawn(self, deployment: Deployment) -> WorkerProcess:
        port = self.ports[deployment.name]
        argv = [sys.executable, "-m", "modelport", "worker", deployment.name,
                "--host", deployment.config.host, "--port", str(port)]  # type: ignore[union-attr]
        env = {**os.environ, WORKER_SPEC_ENV: worker_spec(self.config, deployment),
               WORKER_SECRET_ENV: self._secrets[deployment.name], "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        deployment.pid = process.pid
        worker = WorkerProcess(process, deployment.name)
        self._running[deployment.name] = worker
        return worker

    async def _wait_ready(self, deployment: Deployment, worker: WorkerProcess) -> bool:
        url = deployment.base_url.removesuffix("/v1") + "/health"
        timeout = self.config.server.worker_start_timeout
        started = time.monotonic()
        next_report = started + 10
        while time.monotonic() - started < timeout:
            if worker.process.returncode is not None:
                return False
            try:
                if await self._answers_as_ours(deployment, url):
                    return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > next_report:
                logger.info("model '%s': still loading (%.0f s)", deployment.name,
                            time.monotonic() - started)
                next_report += 10
            await asyncio.sleep(0.1)
        logger.error("model '%s': not ready after %.0f s (server.worker_start_timeout); "
                     "stopping its worker", deployment.name, timeout)
        _signal_group(worker.process, signal.SIGKILL)
        return False

    async def _answers_as_ours(self, deployment: Deployment, health_url: str) -> bool:
        """Loaded, and the server on the port is the worker holding our secret (not the
        gateway or another server that took the port: our worker then fails to bind and
        exits with the reason, which ends the wait)."""
        assert self._session is not None
        async with self._session.get(health_url) as response:
            if response.status != 200:
                return False
        probe = deployment.base_url.removesuffix("/v1") + _IDENTITY_PATH
        stranger = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}
        async with self._session.get(probe, headers=stranger) as response:
            if response.status != 401:
                return False
        ours = {"Authorization": f"Bearer {self._secrets[deployment.name]}"}
        async with self._session.get(probe, headers=ours) as response:
            return response.status != 401

    async def _watch(self, deployment: Deployment, worker: WorkerProcess) -> None:
        """Probe a ready worker's /health: a running process is not a healthy one (a
        stopped or hung worker would keep taking requests that then hang). Two failed
        probes in a row take it out of rotation; one answer puts it back; no answer for
        `worker_stall_timeout_s` kills it, and `_keep_running` restarts it."""
        server = self.config.server
        url = deployment.base_url.removesuffix("/v1") + "/health"
        timeout = aiohttp.ClientTimeout(total=min(server.health_check_interval_s, 10.0))
        failures = 0
        silent_since: float | None = None
        while True:
            await asyncio.sleep(server.health_check_interval_s)
            if await self._answers_health(url, timeout):
                if deployment.status is DeploymentStatus.UNRESPONSIVE:
                    deployment.set_status(DeploymentStatus.READY)
                    logger.info("model '%s': answering health checks again", deployment.name)
                failures, silent_since = 0, None
                continue
            failures += 1
            now = time.monotonic()
            silent_since = silent_since or now
            if failures == 2 and deployment.status is DeploymentStatus.READY:
                deployment.set_status(DeploymentStatus.UNRESPONSIVE,
                                      "not answering health checks")
                deployment.retry_after_s = max(1, int(server.health_check_interval_s))
                logger.warning("model '%s': worker (pid %d) not answering health checks; "
                               "taken out of rotation", deployment.name, worker.process.pid)
            if now - silent_since >= server.worker_stall_timeout_s:
                logger.error("model '%s': worker (pid %d) silent for %.0f s "
                             "(server.worker_stall_timeout_s); killing it to restart it",
                             deployment.name, worker.process.pid, now - silent_since)
                _signal_group(worker.process, signal.SIGKILL)
                return

    async def _answers_health(self, url: str, timeout: aiohttp.ClientTimeout) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def _keep_running(self, deployment: Deployment) -> None:
        delay = _BACKOFF_START_S
        while not self._stopping:
            logger.info("model '%s': starting %s worker on port %d", deployment.name,
                        deployment.engine, self.ports[deployment.name])
            try:
                worker = await self._spawn(deployment)
            except OSError as error:
                deployment.set_status(DeploymentStatus.FAILED, f"cannot start worker: {error}")
                logger.error("model '%s': cannot start worker: %s", deployment.name, error)
                return
            if await self._wait_ready(deployment, worker):
                deployment.set_status(DeploymentStatus.READY)
                logger.info("model '%s': ready in %.1f s (pid %d)", deployment.name,
                            time.monotonic() - worker.started, worker.process.pid)
            became_ready = deployment.status is DeploymentStatus.READY
            watchdog = asyncio.create_task(self._watch(deployment, worker)) \
                if became_ready else None
            try:
                code = await worker.wait()
            finally:
                if watchdog is not None:
                    watchdog.cancel()
            if self._stopping:
                return
            uptime = time.monotonic() - worker.started
            if code == WORKER_CONFIG_ERROR_EXIT and not became_ready:
                # A config problem (missing file, base model without a chat template ...)
                # fails the same way on every restart: report it instead of looping.
                reason = _last_error_line(worker.output_tail) or f"exit code {code}"
                deployment.set_status(DeploymentStatus.FAILED, reason)
                deployment.retry_after_s = 3600
                logger.error("model '%s': worker refused to start, not restarting: %s",
                             deployment.name, reason)
                return
            if uptime > _STABLE_AFTER_S:
                delay = _BACKOFF_START_S
            tail = "\n    ".join(list(worker.output_tail)[-15:])
            logger.warning("model '%s': worker exited with code %s after %.1f s; restarting in "
                           "%.0f s. Last output:\n    %s", deployment.name, code, uptime, delay, tail)
            deployment.restarts += 1
            deployment.set_status(
                DeploymentStatus.RESTARTING, f"worker exited with code {code}; restarting"
            )
            deployment.retry_after_s = max(1, int(delay) + 2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)


def _last_error_line(lines: collections.deque[str]) -> str:
    for line in reversed(lines):
        if line.lower().startswith("error:"):
            return line[6:].strip()
    return lines[-1] if lines else ""


def _signal_group(process: asyncio.subprocess.Process, sig: int) -> None:
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass
