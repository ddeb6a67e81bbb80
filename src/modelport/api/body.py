"""Reading request bodies with a hard size cap (413 instead of buffering anything)."""

from __future__ import annotations

from starlette.requests import Request

from modelport.errors import InvalidRequestError, PayloadTooLargeError


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError("Content-Length header is not a number") from None
        if size > limit:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLargeError(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("request body is empty; send a JSON object")
    return body
