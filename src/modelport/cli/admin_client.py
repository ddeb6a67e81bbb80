"""A small synchronous client of a running gateway's admin API, for `keys`, `usage`,
`load`, `unload` and `reload`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


class AdminClient:
    def __init__(self, url: str, master_key: str) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(base_url=self.url + "/admin", timeout=30.0,
                                  headers={"Authorization": f"Bearer {master_key}"})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as error:
            raise ConnectionError(f"cannot reach modelport at {self.url}: {error}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            message = detail.get("message") if isinstance(detail, dict) else None
            raise ConnectionError(f"{self.url}/admin{path}: HTTP {response.status_code}: "
                                  f"{message or response.text[:300]}")
        return data

    def create_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/keys", json=fields)

    def list_keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/keys")["data"]

    def get_key(self, key_id: str) -> dict[str, Any]:
        return self._call("GET", f"/keys/{key_id}")

    def update_key(self, key_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/keys/{key_id}", json=fields)

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/keys/{key_id}")

    def usage(self, group_by: str, since: str | None, until: str | None) -> dict[str, Any]:
        params = {"group_by": group_by, "since": since or "", "until": until or ""}
        return self._call("GET", "/usage", params={k: v for k, v in params.items() if v})

    def model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{quote(name, safe='')}")

    def load_model(self, name: str, wait: bool = True) -> dict[str, Any]:
        """Load a model; with `wait`, answer once it is ready (or raise why it is not)."""
        return self._call("POST", f"/models/{quote(name, safe='')}/load",
                          params={"wait": "true" if wait else "false"}, timeout=None)

    def unload_model(self, name: str) -> dict[str, Any]:
        # Waits for the model's requests to finish (up to the server's drain timeout).
        return self._call("POST", f"/models/{quote(name, safe='')}/unload", timeout=None)

    def reload(self) -> dict[str, Any]:
        return self._call("POST", "/reload", timeout=None)
