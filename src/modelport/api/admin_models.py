"""The admin API's model routes: which models are loaded, load and unload them, reload.

Shapes are documented in the admin module's docstring (api/admin.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.api.state import GatewayState
from modelport.errors import ConfigError, InvalidRequestError, NotFoundError
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.registry import ModelRegistry


def model_view(state: GatewayState, deployment: Deployment) -> dict[str, Any]:
    loader = state.loader
    used = deployment.last_used
    status = deployment.status
    if status in (DeploymentStatus.UNLOADED, DeploymentStatus.FAILED) and loader.is_loading(deployment):
        status = DeploymentStatus.STARTING  # its load is waiting for room
    return {
        "object": "model_state",
        "name": deployment.name,
        "state": status.value,
        "engine": deployment.engine,
        "load": deployment.load,
        "last_used": _wall_time(used) if used else None,
        "pid": deployment.pid if deployment.is_local else None,
        "memory_bytes": loader.supervisor.worker_memory(deployment.name)
        if deployment.is_local and deployment.pid else None,
        "file_bytes": loader.file_bytes(deployment) if deployment.is_local else None,
        "in_flight": deployment.in_flight,
        "queue": deployment.queue.view(),
        "restarts": deployment.restarts,
        "last_error": deployment.last_error or None,
        "strategy": getattr(deployment.config, "strategy", "least_busy"),
        "replicas": deployment.view(),
    }


def _wall_time(monotonic: float) -> str:
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic), UTC).isoformat()


def local_deployment(registry: ModelRegistry, name: str) -> Deployment:
    """The served local model of this name or alias (one that has workers to load and
    unload), or the error that says why there is none."""
    deployment = registry.named(name)
    if deployment is None:
        served = ", ".join(d.name for d in registry) or "none"
        raise NotFoundError(f"no model named '{name}' is served (served: {served})",
                            param="name", code="model_not_found")
    if not deployment.is_local:
        raise InvalidRequestError(f"model '{deployment.name}' is answered by an online "
                                  "API: it has no worker to load or unload", param="name",
                                  code="not_a_local_model")
    return deployment


def _wanted(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequestError(f"{name} must be true or false (got '{value}')", param=name)


class ModelRoutes:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _local(self, request: Request) -> Deployment:
        return local_deployment(self.state.registry, request.path_params["name"])

    async def list_models(self, request: Request) -> JSONResponse:
        registry = self.state.registry
        # Per device: its budget, what the loaded models hold there and which (the
        # console's memory line; /health shows the same).
        return JSONResponse({"object": "list",
                             "data": [model_view(self.state, d) for d in registry],
                             "memory": self.state.loader.footprints.devices_view(registry)})

    async def show(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        deployment = self.state.registry.named(name)
        if deployment is None:
            raise NotFoundError(f"no model named '{name}' is served", param="name",
                                code="model_not_found")
        return JSONResponse(model_view(self.state, deployment))

    async def load(self, request: Request) -> JSONResponse:
        deployment = self._local(request)
        if _wanted(request, "wait", False):
            await self.state.loader.load(deployment)
            return JSONResponse(model_view(self.state, deployment))
        if deployment.status is DeploymentStatus.READY:
            return JSONResponse(model_view(self.state, deployment))
        self.state.loader.start_loading(deployment)
        return JSONResponse(model_view(self.state, deployment), status_code=202)

    async def unload(self, request: Request) -> JSONResponse:
        deployment = self._local(request)
        await self.state.loader.unload(deployment, self.state.config.server.drain_timeout_s,
                                       "unloaded through the admin API")
        return JSONResponse(model_view(self.state, deployment))

    async def reload(self, request: Request) -> JSONResponse:
        if self.state.reloader is None:
            raise InvalidRequestError("this server runs the built-in config: there is no "
                                      "file to reload", code="no_config_file")
        try:
            report = await self.state.reloader.reload()
        except ConfigError as error:
            raise InvalidRequestError(f"config not reloaded, nothing changed: {error}",
                                      code="invalid_config") from None
        return JSONResponse(report.as_dict())
