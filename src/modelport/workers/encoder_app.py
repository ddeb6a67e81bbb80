"""The OpenAI HTTP app shared by the workers around a sentence-transformers model (the
embedding and the cross-encoder workers): /health, /v1/models, the engine's lifespan,
and one error path, so that every failure, ours or not, reaches the client as an OpenAI
error envelope with its status (never plain text)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelport.errors import ModelportError, error_envelope
from modelport.protocol import RerankRequest, parse_json_body, validate_request

logger = logging.getLogger("modelport.worker")

Handler = Callable[[Request], Awaitable[dict[str, Any]]]


class Engine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def openai_route(path: str, handler: Handler, what: str) -> Route:
    """POST `path`: the handler's dict as JSON, or its error in the envelope."""
    async def endpoint(request: Request) -> Response:
        try:
            body = await handler(request)
        except ModelportError as error:
            return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers)
        except Exception as error:  # noqa: BLE001 - a client gets an envelope, never plain text
            logger.exception("%s request failed", what)
            wrapped = ModelportError(f"{what} failed: {type(error).__name__}: {error}")
            return JSONResponse(wrapped.envelope(), status_code=wrapped.status)
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    return Route(path, endpoint, methods=["POST"])


async def rerank_request(request: Request) -> RerankRequest:
    return validate_request(RerankRequest, parse_json_body(await request.body()))


def encoder_app(engine: Engine, routes: list[Route]) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": engine.name, "object": "model", "created": 0, "owned_by": "modelport"}]})

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_envelope("not found", "invalid_request_error"), status_code=404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        await engine.start()
        yield
        await engine.stop()

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            *routes,
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
