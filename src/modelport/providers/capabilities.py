"""What a model's upstream accepts: the routes, streaming, tools, images and rerank."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.config import ModelConfig, OpenAIUpstreamModel, serves_rerank_only
from modelport.engines.protocol import CHAT, COMPLETIONS, EMBEDDINGS, TRANSCRIBE
from modelport.engines.registry import ENGINES, GENERATES
from modelport.reranking import CROSS_ENCODER, UPSTREAM


@dataclass(frozen=True)
class Capabilities:
    """What a model's upstream accepts, so that a request it cannot serve is a clear 400
    (or skips that model in a fallback list) instead of an upstream error."""

    chat: bool = True
    completions: bool = True
    embeddings: bool = False
    streaming: bool = True
    tools: bool = True
    # Why a model cannot call tools (named in the 400), or how it can.
    tools_note: str = ""
    # Non-text content parts: images, and likewise audio and files. On by default: an online
    # API or adapter judges such input itself.
    vision: bool = True
    # How the model scores documents for /v1/rerank (reranking.CROSS_ENCODER, ...), or
    # None when it serves no /v1/rerank.
    rerank: str | None = None
    # /v1/audio/transcriptions (a multipart form with the audio file).
    audio: bool = False

    @classmethod
    def for_config(cls, config: ModelConfig) -> "Capabilities":
        if serves_rerank_only(config):
            return cls(chat=False, completions=False, embeddings=False, streaming=False,
                       tools=False, vision=False, rerank=CROSS_ENCODER)
        if isinstance(config, OpenAIUpstreamModel):
            # A plain OpenAI-compatible API (vLLM, another gateway) may serve anything.
            return cls(embeddings=True, rerank=UPSTREAM, audio=True)
        spec = ENGINES.get(config.engine)
        if spec is None:  # engine: auto, a chat model until its files choose the engine
            return cls(vision=False)
        # vLLM answers a clear 400 itself when its model takes no images; our llama.cpp
        # and transformers workers load no image or audio encoder (llama.cpp answers 500).
        generates = bool(spec.capabilities & GENERATES)
        return cls(chat=CHAT in spec.capabilities, completions=COMPLETIONS in spec.capabilities,
                   embeddings=EMBEDDINGS in spec.capabilities, streaming=generates,
                   tools=generates, vision=spec.vision, rerank=spec.rerank,
                   audio=TRANSCRIBE in spec.capabilities)
