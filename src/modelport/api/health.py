"""/health (liveness plus per-model readiness) and /health/ready (503 until all are ready)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.api.state import GatewayState
from modelport.routing.deployments import DeploymentStatus


def _report(state: GatewayState) -> dict:
    models = {
        d.name: {
            "status": d.status.value,
            "engine": d.engine,
            "in_flight": d.in_flight,
            "restarts": d.restarts,
            **({"worker": {"pid": d.pid, "url": d.base_url}} if d.is_local else {}),
            **({"detail": d.detail} if d.detail else {}),
        }
        for d in state.registry
    }
    ready = all(m["status"] == DeploymentStatus.READY.value for m in models.values())
    return {
        "status": "ok" if ready else "degraded",
        "ready": ready,
        "uptime_s": round(time.time() - state.started_at, 1),
        "models": models,
    }


async def health(request: Request) -> JSONResponse:
    return JSONResponse(_report(request.app.state.gateway))


async def readiness(request: Request) -> JSONResponse:
    report = _report(request.app.state.gateway)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)
