"""A provider plugin in its modern form: it echoes the last user message back.

Only `chat` is required. `stream_chat` and `embed` are optional: without `stream_chat`
modelport streams the whole answer as one chunk; without `embed` the model does not
serve /v1/embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from modelport.protocol import ChatCompletionRequest
from modelport.providers import ChatProvider, ChatResult, ProviderSettings, Usage


class EchoProvider(ChatProvider):
    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        # Everything under `options:` in modelport.yaml arrives here.
        self.prefix = str(settings.options.get("prefix", ""))

    def _answer(self, request: ChatCompletionRequest) -> str:
        last_user = next(m for m in reversed(request.messages) if m.role == "user")
        return self.prefix + last_user.text()

    async def chat(self, request: ChatCompletionRequest) -> ChatResult:
        text = self._answer(request)
        prompt_words = sum(len(m.text().split()) for m in request.messages)
        return ChatResult(text, Usage(prompt_words, len(text.split())))

    async def stream_chat(self, request: ChatCompletionRequest) -> AsyncIterator[str | Usage]:
        words = self._answer(request).split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "
        yield Usage(prompt_tokens=1, completion_tokens=len(words))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # A stable toy vector per text: 8 numbers from its hash.
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]
