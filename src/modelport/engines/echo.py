"""The echo engine: no weights, no torch. A chat is answered with its last user message
(a completion with its prompt), streamed word by word; an embedding is a deterministic
unit vector made from the text's SHA-256. It exercises the worker app, the supervisor
and the gateway end to end in a second, and shows what a local engine takes: this
module, its config class (config.local_models.EchoModel) and its line in the registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modelport.config.local_models import EchoModel
from modelport.engines.protocol import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    Embedded,
    Finished,
    TextDelta,
)
from modelport.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

_WORDS = re.compile(r"\s*\S+")


def load(model: EchoModel, path: Path) -> "EchoEngine":
    return EchoEngine(model.name, model.dimensions, model.word_delay_s)


def hash_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends on `text` alone: SHA-256 stretched to `dimensions`."""
    digest = b""
    counter = 0
    while len(digest) < dimensions:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [byte / 127.5 - 1.0 for byte in digest[:dimensions]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: their text, in order
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def _prompt(request: ChatCompletionRequest | CompletionRequest) -> str:
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        if isinstance(prompt, str):
            return prompt
        return " ".join(str(item) for item in prompt)
    users = [m for m in request.messages if m.role == "user"] or request.messages
    return _text(users[-1].content)


class _EchoStream:
    def __init__(self, words: list[str], limit: int | None, prompt_tokens: int,
                 delay_s: float) -> None:
        self._words = words
        self._limit = limit
        self._prompt_tokens = prompt_tokens
        self._delay_s = delay_s
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Any]:
        sent = 0
        for word in self._words:
            if self._limit is not None and sent >= self._limit:
                yield Finished("length", self._prompt_tokens, sent)
                return
            await asyncio.sleep(self._delay_s)
            if self.cancelled:
                yield Finished("cancelled", self._prompt_tokens, sent)
                return
            sent += 1
            yield TextDelta(word)
        yield Finished("stop", self._prompt_tokens, sent)


class EchoEngine:
    capabilities = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})

    def __init__(self, name: str, dimensions: int = 16, word_delay_s: float = 0.0) -> None:
        self.name = name
        self.dimensions = dimensions
        self.word_delay_s = word_delay_s

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def generate(self, request: ChatCompletionRequest | CompletionRequest) -> _EchoStream:
        words = _WORDS.findall(_prompt(request))
        return _EchoStream(words, request.output_limit(), len(words), self.word_delay_s)

    async def embed(self, request: EmbeddingRequest) -> Embedded:
        texts = request.texts()
        if texts is None:  # token ids: hashed as their decimal text
            ids = request.input
            texts = [" ".join(map(str, seq)) for seq in (
                [ids] if isinstance(ids[0], int) else ids)]  # type: ignore[index,arg-type]
        vectors = [hash_vector(text, self.dimensions) for text in texts]
        return Embedded(vectors, sum(len(_WORDS.findall(text)) for text in texts))
