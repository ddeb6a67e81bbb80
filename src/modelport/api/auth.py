"""Bearer-key check wrapped around the whole /v1 mount, so no new route can be left open."""

from __future__ import annotations

import hmac

import orjson

from modelport.errors import AuthenticationError


class BearerAuth:
    def __init__(self, app, keys: list[str]) -> None:  # noqa: ANN001 (ASGI app)
        self.app = app
        self._keys = [key.encode() for key in keys]

    def _allowed(self, header: bytes | None) -> bool:
        if not header or not header[:7].lower() == b"bearer ":
            return False
        offered = header[7:].strip()
        # compare_digest against every key so timing does not reveal which prefix matched
        return any([hmac.compare_digest(offered, key) for key in self._keys])

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or not self._keys:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        if self._allowed(header):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError(
            "Incorrect or missing API key; send 'Authorization: Bearer <key>'"
            if header else "Missing API key; send 'Authorization: Bearer <key>'"
        )
        body = orjson.dumps(error.envelope())
        await send({
            "type": "http.response.start", "status": error.status,
            "headers": [(b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer")],
        })
        await send({"type": "http.response.body", "body": body})
