"""Starts one worker process per replica of a local model, waits for readiness, watches
it, restarts the dead.

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

from modelport.config import Config, ModelConfig
from modelport.config.cpus import share, usable_cpus
from modelport.routing.deployments import Deployment, DeploymentStatus, Replica
from modelport.workers.lifetime import die_with_parent
from modelport.workers.runner import WORKER_SPEC_ENV
from modelport.workers.worker_auth import WORKER_SECRET_ENV

logger = logging.getLogger("modelport.supervisor")

WORKER_CONFIG_ERROR_EXIT = 2  # `modelport worker` exits with this on a ConfigError
_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 60.0
_STOP_GRACE_S = 10.0
# Between deciding to kill a stuck worker and the kill: every gateway process checks the
# same progress marks at most 0.5 s apart (workers.stall_watch), so each ends the streams
# it relays from the worker with `replica_stalled` before the kill would break them. The
# wait counts toward the restart's back-off.
_STALL_KILL_AFTER_S = 1.0
# A path no server serves: our worker answers it 401 without its secret and something
# else (404) with it; a server that answers both the same way is not the worker we started.
_IDENTITY_PATH = "/v1/modelport-identity"


def worker_spec(config: Config, model: ModelConfig) -> str:
    """The one-model config a spawned worker runs with (already interpolated and resolved)."""
    return orjson.dumps({
        "server": {"models_dir": str(config.models_dir_path()),
                   "max_body_bytes": config.server.max_body_bytes},
        "models": [model.model_dump(mode="json")],
        "base_dir": config.base_dir,
    }).decode()


def replica_config(model: ModelConfig, replica: Replica) -> ModelConfig:
    """The config replica `replica` of `model` runs with: its own GPUs (a `gpus` list
    gives one entry per replica) and, on CPU, its share of the cores when `threads` is
    not set (replicas that each take every core only fight over them)."""
    update: dict = {}
    if isinstance(getattr(model, "gpus", None), list):
        update["gpus"] = model.replica_gpus(replica.index)  # type: ignore[union-attr]
    replicas = getattr(model, "replicas", 1)
    on_cpu = getattr(model, "device", "auto") == "cpu" or not getattr(model, "gpu_layers", 0)
    if replicas > 1 and "threads" in type(model).model_fields and model.threads is None \
            and on_cpu:  # type: ignore[union-attr]
        update["threads"] = share(usable_cpus().logical, replicas)
    return model.model_copy(update=update) if update else model


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
    """The worker processes of the local models, one per replica: started with the
    server (load: always) or when asked (`launch`, by the on-demand loader), stopped when
    asked (`halt`), watched while they run and restarted when they die. Which deployments
    exist is the registry's business; each replica holds its worker's port and secret,
    and this reports the worker's state into it."""

    def __init__(self, config: Config, deployments: list[Deployment]):
        self.config = config
        self._managed: dict[str, Deployment] = {d.name: d for d in deployments}
        # By replica name. A restarted worker gets the same port and secret, so the
        # replica's provider (a long-lived client) keeps working.
        self._tasks: dict[str, asyncio.Task] = {}
        self._running: dict[str, WorkerProcess] = {}
        # By replica name: the health watchdog of each ready worker, and why a worker is
        # being restarted when the gateway killed it on purpose (the stall watch).
        self._watchdogs: dict[str, asyncio.Task] = {}
        self._restart_reasons: dict[str, str] = {}
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No kept-alive probe connections: one left open to a worker that then dies holds
        # its port (FIN_WAIT) and can make the restarted worker's bind fail.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                              connector=aiohttp.TCPConnector(force_close=True))
        for deployment in self._managed.values():
            if not deployment.on_demand:
                self.launch(deployment)

    def adopt(self, deployment: Deployment) -> None:
        """Take on a deployment added at run time (a reload); started by `launch`."""
        self._managed[deployment.name] = deployment

    def forget(self, name: str) -> None:
        """Drop a deployment whose workers have been halted (removed or replaced)."""
        self._managed.pop(name, None)

    def port_in_use(self) -> set[int]:
        return {r.port for d in self._managed.values() for r in d.local_replicas
                if r.port is not None}

    def launch(self, deployment: Deployment) -> None:
        """Start the deployment's workers (and keep them running) unless they run."""
        if self._stopping:
            return
        for replica in deployment.local_replicas:
            task = self._tasks.get(replica.name)
            if task is not None and not task.done():
                continue
            replica.set_status(DeploymentStatus.STARTING)
            self._tasks[replica.name] = asyncio.create_task(
                self._keep_running(deployment, replica))

    async def halt(self, deployment: Deployment,
                   status: DeploymentStatus = DeploymentStatus.UNLOADED, detail: str = "") -> None:
        """Stop the deployment's workers (SIGTERM, then SIGKILL after the grace period)
        and leave them in `status`; their memory is free when this returns."""
        await asyncio.gather(*(self._halt_replica(r, status, detail)
                               for r in deployment.local_replicas))

    async def _halt_replica(self, replica: Replica, status: DeploymentStatus,
                            detail: str) -> None:
        task = self._tasks.pop(replica.name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        worker = self._running.pop(replica.name, None)
        self._restart_reasons.pop(replica.name, None)  # halted: no restart is under way
        if worker is not None:
            await _end_process(worker.process, _STOP_GRACE_S)
        replica.worker_halted(status, detail)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self.halt(d, DeploymentStatus.STOPPED)
                               for d in list(self._managed.values())))
        logger.info("all workers stopped")
        if self._session is not None:
            await self._session.close()

    async def worker_metrics(self, name: str) -> str | None:
        """The Prometheus metrics of the model's first ready worker (llama.cpp serves
        /metrics), or None."""
        deployment = self._managed.get(name)
        if deployment is None or self._session is None:
            return None
        replica = next((r for r in deployment.local_replicas
                        if r.status is DeploymentStatus.READY), None)
        if replica is None:
            return None
        url = replica.base_url.removesuffix("/v1") + "/metrics"
        headers = {"Authorization": f"Bearer {replica.secret}"}
        try:
            async with self._session.get(url, headers=headers) as response:
                return await response.text() if response.status == 200 else None
        except aiohttp.ClientError:
            return None

    def worker_pid(self, name: str) -> int | None:
        """The process id of the model's first running worker."""
        deployment = self._managed.get(name)
        for replica in deployment.local_replicas if deployment else ():
            worker = self._running.get(replica.name)
            if worker is not None:
                return worker.process.pid
        return None

    def worker_memory(self, name: str) -> int | None:
        """Resident memory of the model's worker processes together in bytes, or None."""
        deployment = self._managed.get(name)
        return None if deployment is None else workers_memory(deployment)

    async def _spawn(self, deployment: Deployment, replica: Replica) -> WorkerProcess:
        model = replica_config(deployment.config, replica)
        argv = [sys.executable, "-m", "modelport", "worker", deployment.name,
                "--host", model.host, "--port", str(replica.port)]  # type: ignore[union-attr]
        env = {**os.environ, WORKER_SPEC_ENV: worker_spec(self.config, model),
               WORKER_SECRET_ENV: replica.secret or "", "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        replica.worker_started(process.pid)
        worker = WorkerProcess(process, replica.name)
        self._running[replica.name] = worker
        return worker

    async def _wait_ready(self, replica: Replica, worker: WorkerProcess) -> bool:
        url = replica.base_url.removesuffix("/v1") + "/health"
        timeout = self.config.server.worker_start_timeout
        started = time.monotonic()
        next_report = started + 10
        while time.monotonic() - started < timeout:
            if worker.process.returncode is not None:
                return False
            try:
                if await self._answers_as_ours(replica, url):
                    return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > next_report:
                logger.info("replica %s: still loading (%.0f s)", replica.name,
                            time.monotonic() - started)
                next_report += 10
            await asyncio.sleep(0.1)
        logger.error("replica %s: not ready after %.0f s (server.worker_start_timeout); "
                     "stopping its worker", replica.name, timeout)
        _signal_group(worker.process, signal.SIGKILL)
        return False

    async def _answers_as_ours(self, replica: Replica, health_url: str) -> bool:
        """Loaded, and the server on the port is the worker holding our secret (not the
        gateway or another server that took the port: our worker then fails to bind and
        exits with the reason, which ends the wait)."""
        assert self._session is not None
        async with self._session.get(health_url) as response:
            if response.status != 200:
                return False
        probe = replica.base_url.removesuffix("/v1") + _IDENTITY_PATH
        stranger = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}
        async with self._session.get(probe, headers=stranger) as response:
            if response.status != 401:
                return False
        ours = {"Authorization": f"Bearer {replica.secret}"}
        async with self._session.get(probe, headers=ours) as response:
            return response.status != 401

    def restart(self, replica: Replica, why: str) -> bool:
        """Kill a stuck worker (its answers stopped coming) in a second, with SIGKILL,
        which a stopped or hung process cannot ignore; `_keep_running` starts it again
        and it is back once ready. False when there is nothing to kill: no worker
        running, or this one is already being restarted (several gateway processes may
        see the same stall)."""
        worker = self._running.get(replica.name)
        if worker is None or worker.process.returncode is not None \
                or replica.name in self._restart_reasons:
            return False
        watchdog = self._watchdogs.pop(replica.name, None)
        if watchdog is not None:
            watchdog.cancel()  # its next good probe must not put the worker back
        self._restart_reasons[replica.name] = why
        logger.error("replica %s: worker (pid %d) %s; killing it to restart it",
                     replica.name, worker.process.pid, why)
        asyncio.get_running_loop().call_later(_STALL_KILL_AFTER_S, _signal_group,
                                              worker.process, signal.SIGKILL)
        return True

    async def _watch(self, replica: Replica, worker: WorkerProcess) -> None:
        """Probe a ready worker's /health: a running process is not a healthy one (a
        stopped or hung worker would keep taking requests that then hang). Each answer is
        marked on the replica; two failed probes in a row take it out of rotation, one
        answer puts it back. A worker silent for its stall timeout is killed by the stall
        watch (workers.stall_watch), which also ends its requests, and `_keep_running`
        restarts it."""
        server = self.config.server
        url = replica.base_url.removesuffix("/v1") + "/health"
        timeout = aiohttp.ClientTimeout(total=min(server.health_check_interval_s, 10.0))
        failures = 0
        while True:
            await asyncio.sleep(server.health_check_interval_s)
            if await self._answers_health(url, timeout):
                replica.answered(time.monotonic())
                if replica.status is DeploymentStatus.UNRESPONSIVE:
                    replica.set_status(DeploymentStatus.READY)
                    logger.info("replica %s: answering health checks again", replica.name)
                failures = 0
                continue
            failures += 1
            if failures == 2 and replica.status is DeploymentStatus.READY:
                replica.unresponsive("not answering health checks",
                                     retry_after_s=max(1, int(server.health_check_interval_s)))
                logger.warning("replica %s: worker (pid %d) not answering health checks; "
                               "taken out of rotation", replica.name, worker.process.pid)

    async def _answers_health(self, url: str, timeout: aiohttp.ClientTimeout) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def _keep_running(self, deployment: Deployment, replica: Replica) -> None:
        delay = _BACKOFF_START_S
        while not self._stopping:
            logger.info("replica %s: starting %s worker on port %d", replica.name,
                        deployment.engine, replica.port)
            try:
                worker = await self._spawn(deployment, replica)
            except OSError as error:
                replica.set_status(DeploymentStatus.FAILED, f"cannot start worker: {error}")
                logger.error("replica %s: cannot start worker: %s", replica.name, error)
                return
            if await self._wait_ready(replica, worker):
                replica.set_status(DeploymentStatus.READY)
                replica.answered(time.monotonic())
                logger.info("replica %s: ready in %.1f s (pid %d)", replica.name,
                            time.monotonic() - worker.started, worker.process.pid)
            became_ready = replica.status is DeploymentStatus.READY
            watchdog = asyncio.create_task(self._watch(replica, worker)) \
                if became_ready else None
            if watchdog is not None:
                self._watchdogs[replica.name] = watchdog
            try:
                code = await worker.wait()
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                    self._watchdogs.pop(replica.name, None)
            stalled = self._restart_reasons.pop(replica.name, None)
            if self._stopping:
                return
            uptime = time.monotonic() - worker.started
            if code == WORKER_CONFIG_ERROR_EXIT and not became_ready:
                # A config problem (missing file, base model without a chat template ...)
                # fails the same way on every restart: report it instead of looping.
                reason = _last_error_line(worker.output_tail) or f"exit code {code}"
                replica.worker_failed(reason, retry_after_s=3600)
                logger.error("replica %s: worker refused to start, not restarting: %s",
                             replica.name, reason)
                return
            if uptime > _STABLE_AFTER_S:
                delay = _BACKOFF_START_S
            wait = max(0.0, delay - _STALL_KILL_AFTER_S) if stalled else delay
            tail = "\n    ".join(list(worker.output_tail)[-15:])
            logger.warning("replica %s: worker exited with code %s after %.1f s; restarting "
                           "in %.0f s. Last output:\n    %s", replica.name, code, uptime,
                           wait, tail)
            replica.worker_restarting(f"{stalled}; restarting" if stalled
                                      else f"worker exited with code {code}; restarting",
                                      retry_after_s=max(1, int(wait) + 2))
            await asyncio.sleep(wait)
            delay = min(delay * 2, _BACKOFF_MAX_S)


def _last_error_line(lines: collections.deque[str]) -> str:
    for line in reversed(lines):
        if line.lower().startswith("error:"):
            return line[6:].strip()
    return lines[-1] if lines else ""


async def _end_process(process: asyncio.subprocess.Process, grace_s: float) -> None:
    _signal_group(process, signal.SIGTERM)
    _signal_group(process, signal.SIGCONT)  # a stopped worker handles SIGTERM only then
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except asyncio.TimeoutError:
        _signal_group(process, signal.SIGKILL)
        await process.wait()


def workers_memory(deployment: Deployment) -> int | None:
    """Resident memory of a model's running worker processes together in bytes, or None."""
    sizes = [resident_bytes(r.pid) for r in deployment.local_replicas if r.pid is not None]
    known = [size for size in sizes if size is not None]
    return sum(known) if known else None


def resident_bytes(pid: int) -> int | None:
    """A process's resident set size (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


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
