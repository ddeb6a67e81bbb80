"""The one HTTP executor: a long-lived client per upstream (a worker or an online API).

Every provider (OpenAI-compatible vendors, adapters such as Anthropic's) sends its
requests through an UpstreamClient; what differs between vendors (auth header, query
parameters, error body shape) is given to it as data when it is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from modelport.errors import (
    ConfigError,
    as_client_status,
    ModelportError,
    UpstreamError,
    UpstreamTimeoutError,
    normalize_upstream_error,
)

MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced; upstreams and plugins sometimes echo the key back."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, MASK)
    return text


_FORWARDED_RESPONSE_HEADERS = ("retry-after", "x-request-id")
# A server closing (or resetting) a pooled keep-alive connection just as it is reused.
_STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

ErrorMapper = Callable[[int, bytes], ModelportError]


class UpstreamConnectionError(UpstreamError):
    """No answer could be had: refused, unreachable, dropped before a reply. Safe to retry."""


class UpstreamConnectTimeoutError(UpstreamConnectionError):
    def __init__(self, message: str, **kw: Any):
        super().__init__(message, status=504, type="timeout_error", **kw)


@dataclass
class UpstreamReply:
    status: int
    body: bytes
    headers: dict[str, str]
    # Set when the provider already parsed (or built) the JSON, so the relay need not.
    payload: dict[str, Any] | None = field(default=None)


class UpstreamClient:
    """Posts requests to `base_url`, mapping transport failures to typed errors.

    The session is created lazily inside the running event loop and reused for every
    request, so connections stay open (no handshake per request).
    """

    def __init__(
        self,
        base_url: str,
        *,
        label: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 900.0,
        proxy: str | None = None,
        error_mapper: ErrorMapper = normalize_upstream_error,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._query = "?" + urlencode(query) if query else ""
        self._urls: dict[tuple[str, bool], str] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._socks = proxy if proxy and proxy.startswith("socks") else None
        self._proxy = None if self._socks else proxy
        if self._socks:
            _socks_connector_class()  # fail at start-up when the SOCKS support is missing
        self._map_error = error_mapper
        self._secrets = tuple(s for s in (*secrets, api_key) if s)
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None

    def _url(self, path: str, from_root: bool = False) -> str:
        """`path` under base_url, or under the server's root (base_url without its /v1) for
        an engine's own routes beside its OpenAI API, such as llama.cpp's /tokenize."""
        url = self._urls.get((path, from_root))
        if url is None:
            base = self.base_url.removesuffix("/v1") if from_root else self.base_url
            url = self._urls[(path, from_root)] = base + path + self._query
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._socks:
                connector: aiohttp.BaseConnector = _socks_connector_class().from_url(
                    self._socks, limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            else:
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers,
                auto_decompress=True, skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()
        self._session = self._fresh_session = None

    def transport_error(self, error: BaseException) -> ModelportError:
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return UpstreamConnectTimeoutError(f"{self.label}: upstream did not accept a "
                                               "connection in time")
        if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamTimeoutError(f"{self.label}: upstream did not answer in time")
        if isinstance(error, aiohttp.ClientConnectorError):
            return UpstreamConnectionError(
                self._redact(f"{self.label}: cannot connect to upstream ({error.os_error})"))
        if isinstance(error, aiohttp.ClientConnectionError):
            return UpstreamConnectionError(
                f"{self.label}: upstream connection failed ({type(error).__name__})")
        return UpstreamError(f"{self.label}: upstream request failed ({type(error).__name__})")

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets) if self._secrets else text

    def _status_error(self, status: int, payload: bytes, headers: dict[str, str]) -> ModelportError:
        error = as_client_status(self._map_error(status, payload), self.label)
        if self._secrets:
            error.message = self._redact(error.message)
            error.args = (error.message,)
        return _with_headers(error, headers)

    async def _send(self, path: str, body: bytes, from_root: bool = False,
                    content_type: str | None = None) -> aiohttp.ClientResponse:
        """POST once; if a pooled keep-alive connection turns out to have been closed by the
        server (llama.cpp's HTTP server closes connections after a few requests), send again
        on a fresh connection: the server never read the first attempt."""
        url = self._url(path, from_root)
        # Per request only when it is not the session's JSON (a multipart form).
        headers = {"Content-Type": content_type} if content_type else None
        try:
            return await self._client().post(url, data=body, proxy=self._proxy, headers=headers)
        except _STALE_CONNECTION_ERRORS as error:
            if isinstance(error, aiohttp.ClientConnectorError):
                raise  # refused or unreachable: nothing stale about it
            # Not the pool again: another pooled connection may be just as stale.
            return await self._fresh_client().post(url, data=body, proxy=self._proxy,
                                                   headers=headers)

    def _fresh_client(self) -> aiohttp.ClientSession:
        """A session whose every request opens a new connection (for the resend above)."""
        if self._socks:
            return self._client()  # SOCKS connections come from the proxy connector only
        if self._fresh_session is None or self._fresh_session.closed:
            self._fresh_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), timeout=self._timeout,
                headers=self._headers, skip_auto_headers=("User-Agent",),
            )
        return self._fresh_session

    async def post(self, path: str, body: bytes, content_type: str | None = None, *,
                   from_root: bool = False) -> UpstreamReply:
        try:
            async with await self._send(path, body, from_root, content_type) as response:
                payload = await response.read()
                headers = _kept_headers(response)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.transport_error(error) from None
        if response.status >= 400:
            raise self._status_error(response.status, payload, headers)
        return UpstreamReply(response.status, payload, headers)

    async def open_stream(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """Send a streaming request; an error status is raised before any byte is relayed."""
        try:
            response = await self._send(path, body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.transport_error(error) from None
        if response.status >= 400:
            try:
                payload = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                payload = b""
            finally:
                response.release()
            raise self._status_error(response.status, payload, _kept_headers(response))
        return response

    async def read_whole(self, response: aiohttp.ClientResponse) -> bytes:
        """The rest of an opened response (a JSON body where a stream was expected)."""
        try:
            return await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.transport_error(error) from None
        finally:
            response.release()

    async def get(self, path: str, timeout: float = 2.0) -> UpstreamReply:
        try:
            async with self._client().get(
                self._url(path), timeout=aiohttp.ClientTimeout(total=timeout),
                proxy=self._proxy,
            ) as response:
                return UpstreamReply(response.status, await response.read(), {})
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.transport_error(error) from None


def _socks_connector_class() -> Any:
    try:
        from aiohttp_socks import ProxyConnector
    except ImportError:
        raise ConfigError(
            "a socks:// proxy needs the aiohttp-socks package: pip install aiohttp-socks "
            "(or use an http:// proxy)"
        ) from None
    return ProxyConnector


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
