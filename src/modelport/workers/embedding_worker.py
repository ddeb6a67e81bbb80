"""The embedding worker's OpenAI HTTP app around EmbeddingEngine: /v1/embeddings, and
/v1/rerank scored by the cosine similarity of the query's and each document's vectors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request

from modelport.config import SentenceTransformersModel
from modelport.engines.embeddings import EmbeddingEngine
from modelport.errors import InvalidRequestError
from modelport.protocol import EmbeddingRequest, RerankRequest, parse_json_body, validate_request
from modelport.reranking import rerank_answer
from modelport.workers.encoder_app import encoder_app, openai_route, rerank_request
from modelport.workers.worker_auth import WorkerAccess, serve_guarded


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def similarity_rerank(engine: EmbeddingEngine, request: RerankRequest) -> dict[str, Any]:
    """Documents scored by cosine similarity to the query, in [-1, 1]: a bi-encoder's
    ranking, less precise than a cross-encoder's but served by any embedding model."""
    documents = request.texts()
    labels = ["query", *(f"documents[{i}]" for i in range(len(documents)))]
    embedded = await engine.embed([request.query, *documents], labels)
    vectors = embedded.vectors
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms == 0, 1.0, norms)[:, None]
    scores = unit[1:] @ unit[0]
    return rerank_answer(engine.name, scores.tolist(), request, embedded.prompt_tokens)


def build_app(engine: EmbeddingEngine) -> Starlette:
    async def embeddings(request: Request) -> dict[str, Any]:
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
        data = [
            {"object": "embedding", "index": i,
             "embedding": _encode_vector(v, parsed.encoding_format)}
            for i, v in enumerate(embedded.vectors)
        ]
        tokens = embedded.prompt_tokens
        return {"object": "list", "data": data, "model": engine.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def rerank(request: Request) -> dict[str, Any]:
        return await similarity_rerank(engine, await rerank_request(request))

    return encoder_app(engine, [
        openai_route("/v1/embeddings", embeddings, "embedding"),
        openai_route("/v1/rerank", rerank, "rerank"),
    ])


def run(model: SentenceTransformersModel, path: Path, host: str, port: int,
        access: WorkerAccess) -> None:
    engine = EmbeddingEngine(model, path)
    serve_guarded(build_app(engine), access, host, port)
