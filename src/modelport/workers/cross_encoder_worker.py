"""The cross-encoder engine on the worker app: /v1/rerank."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from modelport.config import CrossEncoderModel
from modelport.engines.cross_encoder import CrossEncoderEngine
from modelport.engines.protocol import RERANK, Scored
from modelport.protocol import RerankRequest
from modelport.workers.app import EngineAdapter, worker_app


class CrossEncoderWorker(EngineAdapter):
    """The engine protocol over CrossEncoderEngine."""

    capabilities = frozenset({RERANK})

    engine: CrossEncoderEngine

    async def score(self, request: RerankRequest) -> Scored:
        scored = await self.engine.score(request.query, request.texts())
        return Scored(scored.scores.tolist(), scored.prompt_tokens)


def build_app(engine: CrossEncoderEngine) -> Starlette:
    return worker_app(CrossEncoderWorker(engine))


def load(model: CrossEncoderModel, path: Path) -> CrossEncoderWorker:
    return CrossEncoderWorker(CrossEncoderEngine(model, path))

