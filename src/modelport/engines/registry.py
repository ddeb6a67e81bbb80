"""Every local engine by its config name: its config class, the routes it serves, and how
a worker loads it. The worker runner, the gateway's capabilities and `engine: auto` read
it here, so a new engine is one engine module, one config class and one line below.

`load` is "module:function" taking (model config, path) and returning an engine of
engines/protocol.py, which the one worker app serves. It is imported only in the worker
that runs it: engines load torch, and some live above this layer (the transformers
engine's chat needs the tools layer). An engine without `load` is its own server
(llama.cpp, vLLM), which workers/runner.py starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from modelport.config import local_models as kinds
from modelport.engines.protocol import CHAT, COMPLETIONS, EMBEDDINGS, RERANK, TOKENIZE
from modelport.reranking import CROSS_ENCODER, EMBEDDING_SIMILARITY

GENERATES = frozenset({CHAT, COMPLETIONS})


@dataclass(frozen=True)
class EngineSpec:
    config: type
    capabilities: frozenset[str]
    load: str | None = None
    rerank: str | None = None  # how /v1/rerank scores with it (reranking.*), if it does
    vision: bool = False  # reads image (audio, file) content parts itself

    def loader(self) -> Callable[[Any, Any], Any]:
        assert self.load is not None, "this engine is its own server"
        module, _, function = self.load.partition(":")
        return getattr(importlib.import_module(module), function)


ENGINES: dict[str, EngineSpec] = {
    "llamacpp": EngineSpec(kinds.LlamaCppModel, GENERATES),
    "vllm": EngineSpec(kinds.VllmModel, GENERATES, vision=True),
    "transformers": EngineSpec(kinds.TransformersModel, GENERATES | {TOKENIZE},
                               "modelport.workers.transformers_worker:load"),
    "sentence-transformers": EngineSpec(kinds.SentenceTransformersModel,
                                        frozenset({EMBEDDINGS, RERANK}),
                                        "modelport.workers.embedding_worker:load",
                                        rerank=EMBEDDING_SIMILARITY),
    "cross-encoder": EngineSpec(kinds.CrossEncoderModel, frozenset({RERANK}),
                                "modelport.workers.cross_encoder_worker:load",
                                rerank=CROSS_ENCODER),
    "echo": EngineSpec(kinds.EchoModel, GENERATES | {EMBEDDINGS}, "modelport.engines.echo:load"),
}
