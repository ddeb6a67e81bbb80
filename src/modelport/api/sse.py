"""Server-sent events framing shared by the gateway and the workers."""

from __future__ import annotations

from typing import Any

import orjson

from modelport.errors import ModelportError

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"


def sse_event(payload: dict[str, Any] | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def error_event(error: ModelportError) -> bytes:
    """The event that ends a stream which failed after its 200 was sent (then DONE)."""
    return sse_event(error.envelope())
