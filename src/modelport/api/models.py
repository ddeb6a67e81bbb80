"""GET /v1/models: the configured models in OpenAI's list shape, plus their status."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.api.state import GatewayState


def _model_card(deployment, created: int) -> dict:  # noqa: ANN001
    return {
        "id": deployment.name,
        "object": "model",
        "created": created,
        "owned_by": "modelport",
        "engine": deployment.engine,
        "aliases": list(deployment.config.aliases),
        "status": deployment.status.value,
        "kind": deployment.kind,
        # How /v1/rerank scores documents with this model (null: it cannot rerank).
        "rerank": deployment.capabilities.rerank,
    }


async def list_models(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    created = int(state.started_at)
    return JSONResponse(
        {"object": "list", "data": [_model_card(d, created) for d in state.registry]}
    )


async def get_model(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    deployment = state.registry.get(name)  # 404 in the envelope when unknown
    return JSONResponse(_model_card(deployment, int(state.started_at)))
