"""Server-sent events framing shared by the gateway and the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from modelport.errors import ModelportError

if TYPE_CHECKING:
    import aiohttp

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"
# `data:` may be followed by a space or not (iFlytek Spark sends `data:{...}`).
DONE_MARKERS = (b"data: [DONE]", b"data:[DONE]")


def sse_event(payload: dict[str, Any] | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def error_event(error: ModelportError) -> bytes:
    """The event that ends a stream which failed after its 200 was sent (then DONE)."""
    return sse_event(error.envelope())


async def sse_events(response: "aiohttp.ClientResponse") -> AsyncIterator[bytes]:
    """Complete SSE events (each ending in a blank line) from a chunked byte stream."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        if b"\n\n" not in pending:
            if b"\r\n\r\n" not in pending:
                continue
            pending = pending.replace(b"\r\n", b"\n")
        *events, pending = pending.split(b"\n\n")
        for event in events:
            if event:
                yield event + b"\n\n"
    if pending.strip():
        yield pending + b"\n\n"
