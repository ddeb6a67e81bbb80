"""build_app(state): the gateway's routes, error mapping and lifespan."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router

from modelport.api import relay
from modelport.api.access_log import AccessLog
from modelport.api.auth import BearerAuth
from modelport.api.health import health, readiness
from modelport.api.models import get_model, list_models
from modelport.api.openapi import openapi_endpoint
from modelport.api.state import GatewayState
from modelport.errors import ModelportError, error_envelope

logger = logging.getLogger("modelport.gateway")


async def chat_completions(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.CHAT)


async def completions(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.COMPLETIONS)


async def embeddings(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.EMBEDDINGS)


async def rerank(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.RERANK)


def _error_response(error: ModelportError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers)


async def _on_modelport_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ModelportError)
    return _error_response(error)


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    message = {
        404: f"Unknown route {request.method} {request.url.path}",
        405: f"Method {request.method} is not allowed on {request.url.path}",
    }.get(error.status_code, str(error.detail))
    return JSONResponse(
        error_envelope(message, kind, None, None), status_code=error.status_code,
        headers=getattr(error, "headers", None),
    )


async def _on_unexpected(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_envelope(f"internal error: {type(error).__name__}", "server_error"), status_code=500
    )


def _v1_routes() -> list[Route]:
    return [
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{model:path}", get_model, methods=["GET"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
    ]


def build_app(state: GatewayState) -> AccessLog:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        if state.lifecycle is not None:
            await state.lifecycle.start()
        try:
            yield
        finally:
            if state.lifecycle is not None:
                await state.lifecycle.stop()
            for client in state.clients.values():
                await client.close()

    v1 = Mount("/v1", app=BearerAuth(Router(routes=_v1_routes()), state.config.server.api_keys))
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/health/ready", readiness, methods=["GET"]),
            Route("/openapi.json", openapi_endpoint(), methods=["GET"]),
            v1,
        ],
        exception_handlers={
            ModelportError: _on_modelport_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = state
    state.log_bodies = state.config.server.log_prompts or logger.isEnabledFor(logging.DEBUG)
    return AccessLog(app)
