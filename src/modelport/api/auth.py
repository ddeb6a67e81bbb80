"""API-key check wrapped around the whole /v1 mount, so no new route can be left open.

The key comes as `Authorization: Bearer <key>` (OpenAI clients) or as `x-api-key: <key>`
(Anthropic clients); both go through the one comparison, `bearer_matches`.
"""

from __future__ import annotations

import hmac

import orjson

from modelport.api.envelopes import error_payload
from modelport.errors import AuthenticationError


def bearer_matches(header: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Whether an Authorization header carries one of `keys` (gateway and workers alike)."""
    if not header or header[:7].lower() != b"bearer ":
        return False
    offered = header[7:].strip()
    # compare against every key so timing does not reveal which one (or which prefix) matched
    return any([hmac.compare_digest(offered, key) for key in keys])


class BearerAuth:
    def __init__(self, app, keys: list[str]) -> None:  # noqa: ANN001 (ASGI app)
        self.app = app
        self._keys = tuple(key.encode() for key in keys)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or not self._keys:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        if header is None and api_key is not None:
            header = b"Bearer " + api_key
        if bearer_matches(header, self._keys):
            await self.app(scope, receive, send)
            return
        how = "send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        error = AuthenticationError(
            f"Incorrect or missing API key; {how}" if header else f"Missing API key; {how}")
        body = orjson.dumps(error_payload(scope["path"], error))
        await send({
            "type": "http.response.start", "status": error.status,
            "headers": [(b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer")],
        })
        await send({"type": "http.response.body", "body": body})
