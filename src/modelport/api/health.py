"""/health (liveness plus per-model readiness) and /health/ready (503 until all are ready).

An on-demand model counts as ready while unloaded: it loads when a request names it.

Both stay open for probes; when the gateway has API keys, a caller without a valid one
sees status only: no worker pids, internal URLs or failure details (which can name paths).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.api.state import GatewayState
from modelport.routing.deployments import DeploymentStatus
from modelport.workers.worker_auth import bearer_matches


def _full_view(request: Request, state: GatewayState) -> bool:
    keys = tuple(key.encode() for key in state.config.server.api_keys)
    return not keys or bearer_matches(request.headers.get("authorization", "").encode("latin-1"), keys)


def _redacted(report: dict) -> dict:
    redacted = {"status": report["status"], "ready": report["ready"],
                "models": {name: {"status": m["status"]} for name, m in report["models"].items()}}
    if "redis" in report:
        redacted["redis"] = report["redis"]
    return redacted


def _view(request: Request) -> dict:
    state = request.app.state.gateway
    report = _report(state)
    return report if _full_view(request, state) else _redacted(report)


def _report(state: GatewayState) -> dict:
    footprints = state.loader.footprints if state.loader is not None else None
    models = {
        d.name: {
            "status": d.status.value,
            "engine": d.engine,
            "load": d.load,
            "in_flight": d.in_flight,
            "queue": d.queue.view(),
            "restarts": d.restarts,
            **({"worker": {"pid": d.pid, "url": d.base_url}} if d.is_local else {}),
            **({"memory": footprints.model_view(d)}
               if footprints is not None and d.is_local else {}),
            **({"detail": d.detail} if d.detail else {}),
            "replicas": d.view(),
        }
        for d in state.registry
    }
    ready = all(d.status is DeploymentStatus.READY or d.on_demand for d in state.registry)
    if state.all_listening is not None:
        # Ready only once the other gateway processes listen too: connections opened
        # before then would all stay with the ones listening.
        ready = ready and state.all_listening()
    report = {
        "status": "ok" if ready else "degraded",
        "ready": ready,
        "uptime_s": round(time.time() - state.started_at, 1),
        "models": models,
    }
    if footprints is not None:
        # Per device: its memory budget, what the loaded models count there, and which.
        report["memory"] = footprints.devices_view(state.registry)
    if state.config.server.redis_url:
        # Key limits count per process (or are refused) while their Redis is away.
        report["redis"] = "degraded" if getattr(state.limiter, "degraded", False) else "ok"
    return report


async def health(request: Request) -> JSONResponse:
    return JSONResponse(_view(request))


async def readiness(request: Request) -> JSONResponse:
    report = _view(request)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)
