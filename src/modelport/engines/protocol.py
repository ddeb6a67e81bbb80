"""The engine protocol: what a local engine implements to be served by the one worker app
(workers/app.py), which owns everything else (health, the models card, errors, body
limits, worker keys, streaming, disconnects).

Modelled on vLLM's EngineClient (generate / encode / abort / check_health): `generate`
hands back a stream of events that the app reads and may `cancel()` (the client left);
`embed` and `score` answer whole. An engine declares in `capabilities` which of the
OpenAI routes it serves; the app mounts those and no others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

from modelport.errors import ModelportError
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
)

CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
RERANK = "rerank"
TOKENIZE = "tokenize"  # vLLM's chat form of /tokenize: a chat request's prompt tokens
TRANSCRIBE = "transcribe"  # /v1/audio/transcriptions: a multipart form with the audio


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop", "length", "tool_calls", or "cancelled" (the client is gone)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ModelportError


GenerationEvent = Union[TextDelta, Finished, Failed]


@dataclass
class Embedded:
    vectors: Any  # one row per input: a float32 numpy array, or lists of floats
    prompt_tokens: int


@dataclass
class Scored:
    scores: Sequence[float]  # one relevance score per document, in the documents' order
    prompt_tokens: int


class GenerationStream(Protocol):
    """One generation's events: TextDelta (and tool-call events) until one Finished or
    Failed. `cancel()` stops it and frees its slot; a no-op once it has ended."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def cancel(self) -> None: ...


class Engine(Protocol):
    """A loaded model. Only the methods its `capabilities` name are called: generate for
    CHAT/COMPLETIONS, embed for EMBEDDINGS, score for RERANK, tokenize for TOKENIZE."""

    name: str
    capabilities: frozenset[str]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...

    async def generate(self, request: ChatCompletionRequest | CompletionRequest
                       ) -> GenerationStream: ...

    async def embed(self, request: EmbeddingRequest) -> Embedded: ...

    async def score(self, request: RerankRequest) -> Scored: ...

    async def tokenize(self, request: ChatCompletionRequest) -> list[int]: ...
