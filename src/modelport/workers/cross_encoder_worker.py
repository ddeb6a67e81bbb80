"""The cross-encoder worker's OpenAI-style HTTP app: /v1/rerank around CrossEncoderEngine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from modelport.config import CrossEncoderModel
from modelport.engines.cross_encoder import CrossEncoderEngine
from modelport.reranking import rerank_answer
from modelport.workers.encoder_app import encoder_app, openai_route, rerank_request
from modelport.workers.worker_auth import WorkerAccess, serve_guarded


def build_app(engine: CrossEncoderEngine) -> Starlette:
    async def rerank(request: Request) -> dict[str, Any]:
        parsed = await rerank_request(request)
        scored = await engine.score(parsed.query, parsed.texts())
        return rerank_answer(engine.name, scored.scores.tolist(), parsed, scored.prompt_tokens)

    return encoder_app(engine, [openai_route("/v1/rerank", rerank, "rerank")])


def run(model: CrossEncoderModel, path: Path, host: str, port: int,
        access: WorkerAccess) -> None:
    engine = CrossEncoderEngine(model, path)
    serve_guarded(build_app(engine), access, host, port)
