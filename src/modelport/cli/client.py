"""A small synchronous client of a running gateway, for the `models` and `chat` commands."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson

# Addresses a server listens on that a client cannot connect to as such.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def resolve_gateway_url(url: str | None, config: str | None) -> str:
    """--url (or MODELPORT_URL, which typer passes in as `url`), else the config's server."""
    if url:
        return url
    from modelport.config.defaults import find_config

    # The same lookup `serve` does, so a client started beside the config finds its server.
    server = find_config(config).server
    return f"http://{connectable_host(server.host)}:{server.port}"


def connectable_host(host: str) -> str:
    """The address a client connects to for a server listening on `host`, as a URL writes it."""
    host = _WILDCARD_HOSTS.get(host, host)
    return f"[{host}]" if ":" in host else host


class GatewayClient:
    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(10.0, read=600.0))

    def _get(self, path: str) -> dict:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as error:
            raise ConnectionError(f"cannot reach modelport at {self.url}: {error}") from None
        data = response.json()
        if response.status_code >= 400:
            message = data.get("error", {}).get("message", response.text)
            raise http_error(f"{self.url}{path}", response.status_code, message)
        return data

    def models_and_health(self) -> tuple[list[dict], dict]:
        return self._get("/v1/models")["data"], self._get("/health")

    def first_chat_model(self) -> str:
        for card in self._get("/v1/models")["data"]:
            if card.get("kind", "chat") == "chat":
                return card["id"]
        raise ConnectionError(f"no chat model is served at {self.url}")

    def stream_chat(self, model: str, messages: list[dict], max_tokens: int) -> Iterator[str]:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    error = orjson.loads(response.read()).get("error", {})
                    raise http_error(f"{self.url}/v1/chat/completions", response.status_code,
                                     error.get("message"))
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = orjson.loads(line[6:])
                    if "error" in event:
                        raise ConnectionError(event["error"].get("message", "stream failed"))
                    for choice in event.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.HTTPError as error:
            raise ConnectionError(f"cannot reach modelport at {self.url}: {error}") from None


NEEDS_KEY = ("the server wants an API key: pass --api-key KEY or set MODELPORT_API_KEY (a server "
             "with only a master key takes it, or a key from `modelport keys create`)")


def http_error(where: str, status: int, message: object) -> ConnectionError:
    """The error a command reports for an HTTP error answer; a 401 says how to send a key."""
    hint = f"\n{NEEDS_KEY}" if status == 401 else ""
    return ConnectionError(f"{where}: HTTP {status}: {message}{hint}")
