"""The embedding worker's OpenAI HTTP app (/v1/embeddings) around EmbeddingEngine."""

from __future__ import annotations

import base64
import contextlib
import logging
from pathlib import Path

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelport.config import SentenceTransformersModel
from modelport.engines.embeddings import EmbeddingEngine
from modelport.errors import InvalidRequestError, ModelportError, error_envelope
from modelport.protocol import EmbeddingRequest, parse_json_body, validate_request
from modelport.workers.worker_auth import WorkerAccess, serve_guarded

logger = logging.getLogger("modelport.worker")


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _unexpected(error: Exception) -> JSONResponse:
    wrapped = ModelportError(f"embedding failed: {type(error).__name__}: {error}")
    return JSONResponse(wrapped.envelope(), status_code=wrapped.status)


def build_app(engine: EmbeddingEngine) -> Starlette:
    async def embeddings(request: Request) -> Response:
        try:
            parsed = validate_request(EmbeddingRequest, parse_json_body(await request.body()))
            if parsed.dimensions is not None and parsed.dimensions != engine.dimensions:
                raise InvalidRequestError(
                    f"model '{engine.name}' produces {engine.dimensions}-dimensional vectors "
                    "and does not support `dimensions`", param="dimensions",
                )
            inputs = parsed.texts()
            if inputs is None:
                ids = parsed.input
                inputs = [ids] if isinstance(ids[0], int) else ids  # type: ignore[index,assignment]
            embedded = await engine.embed(inputs)
        except ModelportError as error:
            return JSONResponse(error.envelope(), status_code=error.status, headers=error.headers)
        except Exception as error:  # noqa: BLE001 - a client gets an envelope, never plain text
            logger.exception("embedding request failed")
            return _unexpected(error)
        vectors, prompt_tokens = embedded.vectors, embedded.prompt_tokens
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, parsed.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        body = {
            "object": "list",
            "data": data,
            "model": engine.name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

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
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )


def run(model: SentenceTransformersModel, path: Path, host: str, port: int,
        access: WorkerAccess) -> None:
    engine = EmbeddingEngine(model, path)
    serve_guarded(build_app(engine), access, host, port)
