"""What the relay needs from anything that answers a model: the Provider protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from modelport.protocol import OpenAIRequest
from modelport.providers.capabilities import Capabilities
from modelport.providers.upstream import UpstreamReply


class OpenedStream:
    """An answer stream whose start succeeded: OpenAI SSE events (each ending in a blank
    line, `data: [DONE]` last) and how to drop the upstream connection early."""

    __slots__ = ("events", "close")

    def __init__(self, events: AsyncIterator[bytes], close: Callable[[], None]) -> None:
        self.events = events
        self.close = close


class Provider(Protocol):
    """One model's way to an answer. Built once at start-up, shared by all requests.

    `path` is the OpenAI route ("/chat/completions", "/completions", "/embeddings"),
    `body` the JSON to send an OpenAI-compatible upstream (the client's fields, model id
    replaced), `request` the validated request for providers that translate it.
    """

    capabilities: Capabilities

    async def complete(self, path: str, body: dict[str, Any],
                       request: OpenAIRequest) -> UpstreamReply: ...

    async def open_stream(self, path: str, body: dict[str, Any],
                          request: OpenAIRequest) -> OpenedStream: ...

    async def close(self) -> None: ...


async def primed(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`events` with its first item already produced, so that a failure that comes before
    any content is raised while the request can still be retried or re-routed."""
    iterator = events.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None

    async def chained() -> AsyncIterator[bytes]:
        if first is None:
            return
        yield first
        async for event in iterator:
            yield event

    return chained()
