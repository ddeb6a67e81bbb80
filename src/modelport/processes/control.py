"""The channel between the primary and its followers: a small HTTP server of the
primary's on a random loopback port, behind a per-start secret that reaches the
followers through their environment only (never a command line, never a log).

    POST /sync                   a follower's use of the models and its request counts ->
                                 the replica table, the version of the virtual keys and
                                 the other processes' requests in flight on each worker,
                                 whether every gateway process listens yet
    POST /metrics {"pid", "metrics"}   a follower's fresh request counts -> the server's
                                 /metrics text (every process's counts, the workers' own)
    POST /history {"since"}      the server's metrics history and models' state (console)
    POST /restart {"replica", "pid", "why", "by"}   a follower saw this worker stall:
                                 restart it unless it was restarted already
    POST /keys                   a follower changed a virtual key: read them again
    POST /load {"name"}          load a local model, answer once it is ready
    POST /unload {"name", "reason"}   unload it (after its requests drain)
    POST /reload                 re-read the config file -> the reload report

Every answer is JSON: {"table": ...}, {"report": ...}, {"restarted": ...}, {"text": ...},
{"history": ...} or {}, or
{"error": ...} with the status the admin API would have answered.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from modelport.api.admin_models import local_deployment
from modelport.api.metrics import PeerStats
from modelport.api.metrics_history import history_answer
from modelport.api.state import GatewayState
from modelport.errors import (
    AuthenticationError,
    ModelNotReadyError,
    ModelportError,
    NotFoundError,
)
from modelport.processes.wire import (
    apply_reports,
    error_from_wire,
    error_to_wire,
    in_flight_by_replica,
    replica_table,
)
from modelport.routing.replica import DeploymentStatus, Replica

logger = logging.getLogger("modelport.processes")

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


class ControlServer:
    """The primary's side: answers its followers from the gateway's own state."""

    def __init__(self, state: GatewayState, on_sync: Callable[[int], None]) -> None:
        self._state = state  # its lifecycle is the worker supervisor
        self._on_sync = on_sync
        self.secret = secrets.token_urlsafe(32)
        self.url = ""
        self._reports: dict[int, dict[str, Any]] = {}  # follower pid -> its last report
        self._peer_metrics = state.peer_metrics = PeerStats()
        self._runner: web.AppRunner | None = None
        # Counts the changes to virtual keys made in any process: a follower that sees it
        # move reads the keys again (a revoke holds everywhere within one sync).
        self.keys_version = 0
        if state.keys is not None:
            state.keys.listeners.append(self._keys_changed)

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/sync", self._answer(self._sync))
        app.router.add_post("/load", self._answer(self._load))
        app.router.add_post("/unload", self._answer(self._unload))
        app.router.add_post("/reload", self._answer(self._reload))
        app.router.add_post("/keys", self._answer(self._keys))
        app.router.add_post("/restart", self._answer(self._restart))
        app.router.add_post("/metrics", self._answer(self._metrics))
        app.router.add_post("/history", self._answer(self._history))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def forget(self, pid: int) -> None:
        """A follower exited: its requests in flight are no longer anyone's (its request
        counts stay in the server's totals)."""
        self._peer_metrics.retire(pid)
        if self._reports.pop(pid, None) is not None:
            apply_reports(self._state.registry, self._reports.values(), time.monotonic())

    def _answer(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), self.secret.encode()):
                refused = AuthenticationError("not a gateway process of this server")
                return web.json_response({"error": error_to_wire(refused)}, status=401)
            try:
                return web.json_response(await handler(request))
            except ModelportError as error:
                return web.json_response({"error": error_to_wire(error)}, status=error.status)
            except Exception as error:  # noqa: BLE001 - the follower gets a typed error
                logger.exception("control request %s failed", request.path)
                failed = ModelportError(f"internal error: {type(error).__name__}")
                return web.json_response({"error": error_to_wire(failed)}, status=500)
        return answer

    async def _sync(self, request: web.Request) -> dict[str, Any]:
        report = await request.json()
        pid = int(report["pid"])
        self._reports[pid] = report["models"]
        if report.get("metrics") is not None:
            self._peer_metrics.update(pid, report["metrics"])
        apply_reports(self._state.registry, self._reports.values(), time.monotonic())
        self._on_sync(pid)
        others = (use for follower, use in self._reports.items() if follower != pid)
        listening = self._state.all_listening
        return {"table": replica_table(self._state.registry), "keys": self.keys_version,
                "in_flight": in_flight_by_replica(others, self._state.registry),
                "listening": listening() if listening is not None else True}

    async def _restart(self, request: web.Request) -> dict[str, Any]:
        """Restart the worker a follower saw stall, if it is still the one it saw (same
        pid) and no restart is under way: several processes may see the same stall."""
        asked = await request.json()
        replica = self._local_replica(str(asked["replica"]))
        why = f"{asked['why']} (seen by gateway process pid {int(asked['by'])})"
        restart = getattr(self._state.lifecycle, "restart", None)
        restarted = replica.pid == asked["pid"] and restart is not None \
            and restart(replica, why)
        if restarted:
            replica.set_status(DeploymentStatus.UNRESPONSIVE, why + "; restarting it")
        else:
            logger.info("replica %s: gateway process pid %d asked to restart its worker "
                        "(pid %s) after a stall; already restarted or being restarted",
                        replica.name, int(asked["by"]), asked["pid"])
        return {"restarted": bool(restarted), "table": replica_table(self._state.registry)}

    async def _metrics(self, request: web.Request) -> dict[str, Any]:
        asked = await request.json()
        self._peer_metrics.update(int(asked["pid"]), asked["metrics"])
        metrics = self._state.metrics
        if metrics is None:
            raise NotFoundError("metrics are off (server.metrics: false)", code="metrics_off")
        text = await metrics.exposition(getattr(self._state.lifecycle, "worker_metrics", None))
        return {"text": text.decode()}

    async def _history(self, request: web.Request) -> dict[str, Any]:
        asked = await request.json()
        since = asked.get("since")
        return {"history": history_answer(self._state, None if since is None else float(since))}

    def _local_replica(self, name: str) -> Replica:
        for deployment in self._state.registry:
            for replica in deployment.local_replicas if deployment.is_local else ():
                if replica.name == name:
                    return replica
        raise NotFoundError(f"no worker named '{name}' is running here", param="replica",
                            code="replica_not_found")

    async def _load(self, request: web.Request) -> dict[str, Any]:
        asked = await request.json()
        deployment = local_deployment(self._state.registry, str(asked["name"]))
        await self._state.loader.load(deployment)
        return {"table": replica_table(self._state.registry)}

    async def _unload(self, request: web.Request) -> dict[str, Any]:
        asked = await request.json()
        deployment = local_deployment(self._state.registry, str(asked["name"]))
        await self._state.loader.unload(deployment, self._state.config.server.drain_timeout_s,
                                        str(asked["reason"]))
        return {"table": replica_table(self._state.registry)}

    def _keys_changed(self) -> None:
        self.keys_version += 1

    async def _keys(self, request: web.Request) -> dict[str, Any]:
        if self._state.keys is not None:
            await self._state.keys.reload()
        self._keys_changed()
        return {}

    async def _reload(self, request: web.Request) -> dict[str, Any]:
        reloader = self._state.reloader
        if reloader is None:
            raise ModelportError("this server runs the built-in config: there is no file "
                                 "to reload", code="no_config_file")
        return {"report": (await reloader.reload()).as_dict()}


class ControlClient:
    """A follower's side of the channel."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._session: aiohttp.ClientSession | None = None

    async def sync(self, report: dict[str, Any]) -> dict[str, Any]:
        """{"table": the replica table, "keys": the version of the virtual keys,
        "in_flight": the other processes' requests, "listening": every process listens}."""
        return await self._call("/sync", report, timeout_s=5.0)

    async def restart(self, replica: str, pid: int | None, why: str,
                      by: int) -> dict[str, Any]:
        """{"restarted": whether the primary restarted it now, "table": ...}."""
        return await self._call("/restart", {"replica": replica, "pid": pid, "why": why,
                                             "by": by}, timeout_s=5.0)

    async def metrics(self, pid: int, snapshot: dict[str, Any]) -> bytes:
        """The server's /metrics text, with this process's `snapshot` of its counts."""
        answer = await self._call("/metrics", {"pid": pid, "metrics": snapshot}, timeout_s=10.0)
        return answer["text"].encode()

    async def history(self, since: float | None) -> dict[str, Any]:
        return (await self._call("/history", {"since": since}, timeout_s=10.0))["history"]

    async def keys_changed(self) -> None:
        await self._call("/keys", {}, timeout_s=5.0)

    async def load(self, name: str) -> dict[str, Any]:
        return (await self._call("/load", {"name": name}))["table"]

    async def unload(self, name: str, reason: str) -> dict[str, Any]:
        return (await self._call("/unload", {"name": name, "reason": reason}))["table"]

    async def reload(self) -> dict[str, Any]:
        return (await self._call("/reload", {}))["report"]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, path: str, body: dict[str, Any],
                    timeout_s: float | None = None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        try:
            async with self._session.post(self.url + path, json=body,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as reply:
                answer = await reply.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise ModelNotReadyError(
                "the gateway's primary process (which runs the workers) is not answering: "
                f"{type(error).__name__}; retry shortly", headers={"Retry-After": "2"}) from None
        if "error" in answer:
            raise error_from_wire(answer["error"])
        return answer
