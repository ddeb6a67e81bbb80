"""One long-lived HTTP client per OpenAI-compatible upstream (a worker or an online API)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from modelport.errors import (
    ModelportError,
    UpstreamError,
    UpstreamTimeoutError,
    normalize_upstream_error,
)

_FORWARDED_RESPONSE_HEADERS = ("retry-after", "x-request-id")
_STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@dataclass
class UpstreamReply:
    status: int
    body: bytes
    headers: dict[str, str]


class UpstreamClient:
    """Posts OpenAI requests to `base_url`, mapping transport failures to typed errors.

    The session is created lazily inside the running event loop and reused for every
    request, so connections to a worker stay open (no handshake per request).
    """

    def __init__(
        self,
        base_url: str,
        *,
        label: str,
        api_key: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 900.0,
        proxy: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers,
                auto_decompress=True, skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _transport_error(self, error: BaseException) -> ModelportError:
        if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamTimeoutError(f"{self.label}: upstream did not answer in time")
        if isinstance(error, aiohttp.ClientConnectorError):
            return UpstreamError(f"{self.label}: cannot connect to upstream ({error.os_error})")
        return UpstreamError(f"{self.label}: upstream connection failed ({type(error).__name__})")

    async def _send(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """POST once; if a pooled keep-alive connection turns out to be closed by the
        server (llama.cpp's HTTP server closes connections after a few requests), send
        again on a fresh connection: the server never saw the first attempt."""
        try:
            return await self._client().post(self.base_url + path, data=body, proxy=self._proxy)
        except _STALE_CONNECTION_ERRORS:
            return await self._client().post(self.base_url + path, data=body, proxy=self._proxy)

    async def post(self, path: str, body: bytes) -> UpstreamReply:
        try:
            async with await self._send(path, body) as response:
                payload = await response.read()
                headers = _kept_headers(response)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._transport_error(error) from None
        if response.status >= 400:
            raise _with_headers(normalize_upstream_error(response.status, payload), headers)
        return UpstreamReply(response.status, payload, headers)

    async def open_stream(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """Send a streaming request; an error status is raised before any byte is relayed."""
        try:
            response = await self._send(path, body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._transport_error(error) from None
        if response.status >= 400:
            try:
                payload = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                payload = b""
            finally:
                response.release()
            raise _with_headers(
                normalize_upstream_error(response.status, payload), _kept_headers(response)
            )
        return response

    async def get(self, path: str, timeout: float = 2.0) -> UpstreamReply:
        try:
            async with self._client().get(
                self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout),
                proxy=self._proxy,
            ) as response:
                return UpstreamReply(response.status, await response.read(), {})
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._transport_error(error) from None


def _kept_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {
        name: response.headers[name]
        for name in _FORWARDED_RESPONSE_HEADERS
        if name in response.headers
    }


def _with_headers(error: ModelportError, headers: dict[str, str]) -> ModelportError:
    if "retry-after" in headers:
        error.headers.setdefault("Retry-After", headers["retry-after"])
    return error
