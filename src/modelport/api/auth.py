"""API-key check wrapped around the whole /v1 mount, so no new route can be left open.

The key comes as `Authorization: Bearer <key>` (OpenAI clients) or as `x-api-key: <key>`
(Anthropic clients); both go through the one comparison, `bearer_matches`.
"""

from __future__ import annotations

from typing import Any, Protocol

from modelport.api.access_log import record_of
from modelport.api.envelopes import error_payload
from modelport.errors import AuthenticationError, send_error
from modelport.workers.worker_auth import bearer_matches, key_matches, offered_key


class VirtualKeys(Protocol):
    def authenticate(self, secret: str) -> Any: ...


class BearerAuth:
    """Static keys (the config's, `--api-key`, the master key) let a request through as
    they are; a virtual key (`sk-mp-…`, when the admin API is on) is looked up in memory,
    refused with its reason when revoked or expired, and otherwise handed to the request
    (its access record) for the per-key checks that need the model."""

    def __init__(self, app, keys: list[str], *, master_key: str | None = None,  # noqa: ANN001
                 virtual_keys: VirtualKeys | None = None) -> None:
        self.app = app
        self.use_keys(keys, master_key)
        self._virtual = virtual_keys

    def use_keys(self, keys: list[str], master_key: str | None) -> None:
        """Accept these static keys from now on (a configuration reload)."""
        self._keys = tuple(key.encode() for key in [*keys, *([master_key] if master_key else [])])

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or not (self._keys or self._virtual):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        if header is None and api_key is not None:
            header = b"Bearer " + api_key
        offered = offered_key(header)
        if key_matches(offered, self._keys):
            await self.app(scope, receive, send)
            return
        how = "send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        message = f"Incorrect or missing API key; {how}" if header else f"Missing API key; {how}"
        if offered is not None and self._virtual is not None:
            key = self._virtual.authenticate(offered.decode("latin-1"))
            refusal = key.refusal() if key is not None else None
            if key is not None and refusal is None:
                record_of(scope).key = key
                await self.app(scope, receive, send)
                return
            message = refusal or message
        error = AuthenticationError(message, headers={"WWW-Authenticate": "Bearer"})
        await send_error(send, error, error_payload(scope["path"], error))

