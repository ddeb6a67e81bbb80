"""The admin API under /admin: virtual keys and usage, behind the master key.

    POST   /admin/keys          create a key; the answer holds its secret, shown once
    GET    /admin/keys          list keys (secrets never; a short prefix to recognise them)
    GET    /admin/keys/{id}     one key, with the tokens it used in its budget period
    PATCH  /admin/keys/{id}     change the fields sent; null lifts a limit
    DELETE /admin/keys/{id}     revoke (refused from the next request on)
    GET    /admin/usage         ?group_by=key|model|day&since=…&until=…
    GET    /admin/metrics/history   the last hour of per-model metrics (api.metrics_history)

Models (local workers) and the configuration, in api/admin_models.py:

    GET    /admin/models                  {"object": "list", "data": [model state, ...],
                                          "memory": {device: {"budget_bytes",
                                          "used_bytes", "models"}}}
    GET    /admin/models/{name}           one model state (name or alias)
    POST   /admin/models/{name}/load      start loading: 202 and its state ("starting"),
                                          200 when already ready; ?wait=true answers
                                          once it is ready (or 503 with why it is not)
    POST   /admin/models/{name}/unload    stop its worker once its requests finish (up
                                          to server.drain_timeout_s); 200, "unloaded"
    POST   /admin/reload                  re-read the config file (as SIGHUP does): 200
                                          {"object": "reload", "added", "removed",
                                          "restarted", "updated", "unchanged": [names],
                                          "needs_restart": [settings], "seconds"}; an
                                          invalid file changes nothing: 400, code
                                          invalid_config, the message names the fields

A model state:

    {"object": "model_state", "name": "smollm2", "state": "ready", "engine": "llamacpp",
     "load": "on_demand", "last_used": "2026-12-01T04:00:00+00:00" | null,
     "pid": 4242 | null, "memory_bytes": 181000000 | null (the worker's resident memory),
     "file_bytes": 96000000 | null (its files), "in_flight": 0,
     "restarts": 0, "last_error": null | "worker exited with code 1; restarting"}

`state` is one of starting, ready, unresponsive, restarting, failed, stopped, unloaded,
unloading. Online models are listed (pid and memory null) but cannot be loaded or
unloaded (400, code not_a_local_model); an unknown name is a 404 (model_not_found).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from modelport.api.admin_bodies import KeyCreate, KeyPatch, parse_time
from modelport.api.admin_models import ModelRoutes
from modelport.workers.worker_auth import bearer_matches
from modelport.api.body import read_body
from modelport.api.metrics_history import history_endpoint
from modelport.api.state import GatewayState
from modelport.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ModelportError,
    NotFoundError,
    PermissionDeniedError,
)
from modelport.protocol import parse_json_body
from modelport.store.database import unreachable
from modelport.store.keys import KeyStore, VirtualKey, period_start
from modelport.store.usage import GROUPINGS, UsageRecorder


def key_view(key: VirtualKey) -> dict[str, Any]:
    """A key as the API shows it: every setting, never the secret or its hash."""
    return {
        "id": key.id, "object": "api_key", "name": key.name, "key_prefix": key.prefix,
        "models": list(key.models) if key.models is not None else None,
        "rpm": key.rpm, "tpm": key.tpm, "max_parallel": key.max_parallel,
        "budget_tokens": key.budget_tokens, "budget_period": key.budget_period,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked": key.revoked, "expired": key.expired(),
        "created_at": key.created_at.isoformat() if key.created_at else None,
        "metadata": dict(key.metadata),
    }


class MasterKeyGate:
    """Every /admin route answers only to the master key (no route can be left open)."""

    def __init__(self, app, master_key: str | None) -> None:  # noqa: ANN001 (ASGI app)
        self.app = app
        self.use_key(master_key)

    def use_key(self, master_key: str | None) -> None:
        """Answer to this master key from now on (a configuration reload)."""
        self._keys = (master_key.encode(),) if master_key else ()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            if not self._keys:
                raise PermissionDeniedError(
                    "the admin API is off: no master key is set. Start the server with "
                    "server.master_key in the config ('${MODELPORT_MASTER_KEY}'), "
                    "--master-key, or the MODELPORT_MASTER_KEY environment variable",
                    code="admin_disabled")
            header = dict(scope["headers"]).get(b"authorization")
            if not bearer_matches(header, self._keys):
                raise AuthenticationError(
                    "the admin API needs the master key: send 'Authorization: Bearer "
                    "<master key>'" if header is None else "incorrect master key",
                    headers={"www-authenticate": "Bearer"})
        await self.app(scope, receive, send)


class AdminRoutes:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @property
    def keys(self) -> KeyStore:
        assert self.state.keys is not None
        return self.state.keys

    @property
    def usage(self) -> UsageRecorder:
        assert self.state.usage is not None
        return self.state.usage

    async def _json(self, request: Request) -> dict[str, Any]:
        return parse_json_body(await read_body(request, self.state.config.server.max_body_bytes))

    def _canonical_models(self, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        canonical: list[str] = []
        for name in names:
            try:
                model = self.state.config.model(name).name
            except ConfigError:
                known = ", ".join(m.name for m in self.state.config.models)
                raise InvalidRequestError(f"models: no model named '{name}' (configured: "
                                          f"{known})", param="models") from None
            if model not in canonical:
                canonical.append(model)
        return canonical


    async def create(self, request: Request) -> JSONResponse:
        fields = _validated(KeyCreate, await self._json(request))
        created = await self.keys.create(
            fields.name, models=self._canonical_models(fields.models), rpm=fields.rpm,
            tpm=fields.tpm, max_parallel=fields.max_parallel,
            budget_tokens=fields.budget_tokens, budget_period=fields.budget_period,
            expires_at=fields.expires_at, metadata=fields.metadata)
        return JSONResponse({**key_view(created.key), "key": created.secret}, status_code=201)

    async def list_keys(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list",
                             "data": [key_view(key) for key in await self.keys.list()]})

    async def show(self, request: Request) -> JSONResponse:
        key = _found(await self.keys.get(request.path_params["key_id"]), request)
        since = period_start(key.budget_period)
        view = key_view(key)
        view["tokens_used"] = await self.keys.tokens_used(key.id, since)
        view["tokens_used_since"] = since.isoformat() if since else None
        return JSONResponse(view)

    async def patch(self, request: Request) -> JSONResponse:
        data = await self._json(request)
        changes = _validated(KeyPatch, data).model_dump(exclude_unset=True)
        if "models" in changes:
            changes["models"] = self._canonical_models(changes["models"])
        key_id = request.path_params["key_id"]
        key = await self.keys.update(key_id, changes) if changes else await self.keys.get(key_id)
        return JSONResponse(key_view(_found(key, request)))

    async def revoke(self, request: Request) -> JSONResponse:
        key = await self.keys.revoke(request.path_params["key_id"])
        return JSONResponse(key_view(_found(key, request)))

    async def usage_summary(self, request: Request) -> JSONResponse:
        query = request.query_params
        group_by = query.get("group_by", "key")
        if group_by not in GROUPINGS:
            raise InvalidRequestError(f"group_by must be one of {', '.join(GROUPINGS)} "
                                      f"(got '{group_by}')", param="group_by")
        now = datetime.now(UTC)
        since, until = (parse_time(query.get(name), name, now) for name in ("since", "until"))
        rows = await self.usage.summary(group_by, since, until)
        if group_by == "key":
            names = {key.id: key.name for key in await self.keys.list()}
            for row in rows:
                row["name"] = names.get(row["key"]) if row["key"] else None
        return JSONResponse({
            "object": "list", "group_by": group_by,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None, "data": rows,
        })


def _found(key: VirtualKey | None, request: Request) -> VirtualKey:
    if key is None:
        key_id = request.path_params["key_id"]
        raise NotFoundError(f"no API key with id '{key_id}'", param="id", code="key_not_found")
    return key


def _validated(model: type, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = ("unknown field" if first["type"] == "extra_forbidden"
                   else first["msg"].removeprefix("Value error, "))
        raise InvalidRequestError(f"{field}: {message}" if field else message,
                                  param=field) from None


DATABASE_WAIT_S = 5.0  # a database that does not answer by then is away (a 503)


class DatabaseUnavailableError(ModelportError):
    status = 503
    type = "service_unavailable"
    code = "database_unavailable"


Handler = Callable[[Request], Awaitable[JSONResponse]]


def _needs_database(handler: Handler) -> Handler:
    """A route that reads or writes keys or usage: a database that is away is a 503 in
    the envelope, said at once or within DATABASE_WAIT_S, never a 500 or a hang. Serving
    goes on meanwhile: keys are checked from memory, usage rows wait in their queue."""
    @functools.wraps(handler)
    async def guarded(request: Request) -> JSONResponse:
        try:
            async with asyncio.timeout(DATABASE_WAIT_S):
                return await handler(request)
        except ModelportError:
            raise
        except Exception as error:
            if not unreachable(error):
                raise
            raise DatabaseUnavailableError(
                f"the keys and usage database is unreachable ({type(error).__name__}); "
                "requests are still served, keys from memory; retry shortly",
                headers={"Retry-After": "5"}) from None

    return guarded


def admin_app(state: GatewayState) -> MasterKeyGate:
    """The /admin routes behind the master key, to be mounted at /admin."""
    routes = AdminRoutes(state)
    models = ModelRoutes(state)
    return MasterKeyGate(Router(routes=[
        Route("/models", models.list_models, methods=["GET"]),
        Route("/models/{name:path}/load", models.load, methods=["POST"]),
        Route("/models/{name:path}/unload", models.unload, methods=["POST"]),
        Route("/models/{name:path}", models.show, methods=["GET"]),
        Route("/reload", models.reload, methods=["POST"]),
        Route("/keys", _needs_database(routes.create), methods=["POST"]),
        Route("/keys", _needs_database(routes.list_keys), methods=["GET"]),
        Route("/keys/{key_id}", _needs_database(routes.show), methods=["GET"]),
        Route("/keys/{key_id}", _needs_database(routes.patch), methods=["PATCH"]),
        Route("/keys/{key_id}", _needs_database(routes.revoke), methods=["DELETE"]),
        Route("/usage", _needs_database(routes.usage_summary), methods=["GET"]),
        Route("/metrics/history", history_endpoint, methods=["GET"]),
    ]), state.config.server.master_key)
