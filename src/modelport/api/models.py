"""GET /v1/models: the configured models in OpenAI's list shape, plus their status."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.errors import ModelNotFoundError
from modelport.openai_shapes import model_card, model_list

from modelport.api.access_log import record_of
from modelport.api.key_checks import may_use
from modelport.api.state import GatewayState


def _model_card(deployment, created: int) -> dict:  # noqa: ANN001
    return model_card(
        deployment.name, created,
        engine=deployment.engine,
        aliases=list(deployment.config.aliases),
        status=deployment.status.value,
        # always: loaded with the server; on_demand: loaded by the first request naming it.
        load=deployment.load,
        kind=deployment.kind,
        # How /v1/rerank scores documents with this model (null: it cannot rerank).
        rerank=deployment.capabilities.rerank,
    )


async def list_models(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    created = int(state.started_at)
    key = record_of(request.scope).key  # a virtual key sees only the models it may use
    return JSONResponse(model_list(
        [_model_card(d, created) for d in state.registry if may_use(key, d)]))


async def get_model(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    deployment = state.registry.get(name)  # 404 in the envelope when unknown
    if not may_use(record_of(request.scope).key, deployment):
        raise ModelNotFoundError(f"The model '{name}' does not exist or is not served here",
                                 param="model")
    return JSONResponse(_model_card(deployment, int(state.started_at)))
