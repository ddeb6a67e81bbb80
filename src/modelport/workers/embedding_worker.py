"""The sentence-transformers embedding engine on the worker app: /v1/embeddings, and
/v1/rerank scored by the cosine similarity of the query's and each document's vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.applications import Starlette

from modelport.config import SentenceTransformersModel
from modelport.engines.embeddings import EmbeddingEngine
from modelport.engines.protocol import EMBEDDINGS, RERANK, Embedded, Scored
from modelport.errors import InvalidRequestError
from modelport.protocol import EmbeddingRequest, RerankRequest
from modelport.workers.app import EngineAdapter, worker_app


class EmbeddingWorker(EngineAdapter):
    """The engine protocol over EmbeddingEngine."""

    capabilities = frozenset({EMBEDDINGS, RERANK})

    engine: EmbeddingEngine

    async def embed(self, request: EmbeddingRequest) -> Embedded:
        engine = self.engine
        if request.dimensions is not None and request.dimensions != engine.dimensions:
            raise InvalidRequestError(
                f"model '{engine.name}' produces {engine.dimensions}-dimensional vectors "
                "and does not support `dimensions`", param="dimensions",
            )
        inputs = request.texts()
        if inputs is None:
            ids = request.input
            inputs = [ids] if isinstance(ids[0], int) else ids  # type: ignore[index,assignment]
        return await engine.embed(inputs)

    async def score(self, request: RerankRequest) -> Scored:
        """Documents scored by cosine similarity to the query, in [-1, 1]: a bi-encoder's
        ranking, less precise than a cross-encoder's but served by any embedding model."""
        documents = request.texts()
        labels = ["query", *(f"documents[{i}]" for i in range(len(documents)))]
        embedded = await self.engine.embed([request.query, *documents], labels)
        vectors = embedded.vectors
        norms = np.linalg.norm(vectors, axis=1)
        unit = vectors / np.where(norms == 0, 1.0, norms)[:, None]
        return Scored((unit[1:] @ unit[0]).tolist(), embedded.prompt_tokens)


def build_app(engine: EmbeddingEngine) -> Starlette:
    return worker_app(EmbeddingWorker(engine))


def load(model: SentenceTransformersModel, path: Path) -> EmbeddingWorker:
    return EmbeddingWorker(EmbeddingEngine(model, path))

