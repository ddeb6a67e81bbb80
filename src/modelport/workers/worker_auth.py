"""Who may call a worker, and how big a request it reads: one ASGI guard for every
Starlette worker (llama.cpp checks its own `api_keys`; vLLM reads VLLM_API_KEY).

A worker started by the gateway accepts the random secret the supervisor put in its
environment (never argv, never logged); `worker_key` from the config is accepted as
well, for clients that call the worker directly. A worker with neither stays open only
on a loopback address.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

from modelport.errors import AuthenticationError, ConfigError, PayloadTooLargeError, send_error
from modelport.workers.ports import bind_error_message, bind_socket, is_loopback

WORKER_SECRET_ENV = "MODELPORT_WORKER_SECRET"


def offered_key(header: bytes | None) -> bytes | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    if not header or header[:7].lower() != b"bearer ":
        return None
    return header[7:].strip()


def key_matches(offered: bytes | None, keys: tuple[bytes, ...]) -> bool:
    # compare against every key so timing does not reveal which one (or which prefix) matched
    return offered is not None and any([hmac.compare_digest(offered, key) for key in keys])


def bearer_matches(header: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Whether an Authorization header carries one of `keys` (gateway and workers alike)."""
    return key_matches(offered_key(header), keys)


# Readiness probes and load balancers ask without a key; it answers status only.
_OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class WorkerAccess:
    keys: tuple[str, ...]  # empty: no key needed (loopback only)
    max_body_bytes: int


def worker_access(model: Any, host: str, max_body_bytes: int) -> WorkerAccess:
    """The keys this worker accepts. Takes the secret out of the environment, so that
    nothing this process starts inherits it by accident."""
    secret = os.environ.pop(WORKER_SECRET_ENV, None)
    worker_key = getattr(model, "worker_key", None)
    keys = tuple(str.__str__(k) for k in (secret, worker_key) if k)
    if not keys and not is_loopback(host):
        raise ConfigError(worker_host_problem(model.name, host))
    return WorkerAccess(keys, max_body_bytes)


def worker_host_problem(name: str, host: str) -> str:
    return (f"model '{name}': its worker would listen on {host} without a key, so anyone on "
            "the network could use it; set worker_key: ${YOUR_WORKER_KEY} on the model, or "
            "bind host: 127.0.0.1")


class WorkerGuard:
    """Pure ASGI: 401 without a valid key, 413 above the body cap; the body is read here
    (at most the cap) and replayed to the app, which never sees more."""

    def __init__(self, app: Any, access: WorkerAccess) -> None:
        self.app = app
        self._keys = tuple(key.encode() for key in access.keys)
        self._limit = access.max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (self._keys and scope["path"] not in _OPEN_PATHS
                and not bearer_matches(dict(scope["headers"]).get(b"authorization"), self._keys)):
            await send_error(send, AuthenticationError(
                "Incorrect or missing worker key; send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"}))
            return
        try:
            body = await self._read_body(scope, receive)
        except PayloadTooLargeError as error:
            await send_error(send, error)
            return
        if body is None:  # the client left before sending its body
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later: http.disconnect, which cancels streams

        await self.app(scope, replay, send)

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            raise PayloadTooLargeError(
                f"request body of {int(declared)} bytes exceeds the {self._limit}-byte limit")
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self._limit:
                raise PayloadTooLargeError(f"request body exceeds the {self._limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def serve_guarded(app: Any, access: WorkerAccess, host: str, port: int, **options: Any) -> None:
    """Serve `app` behind the guard on host:port (blocking). The socket is bound here, so a
    port taken meanwhile is a ConfigError naming it (the supervisor then fails the model
    once with that reason) rather than uvicorn's exit 1, which would be restarted."""
    import uvicorn

    try:
        sock = bind_socket(host, port)
    except OSError as error:
        raise ConfigError(bind_error_message(host, port, "worker", error)) from None
    config = uvicorn.Config(WorkerGuard(app, access), log_level="warning", access_log=False,
                            loop="uvloop", http="httptools", **options)
    uvicorn.Server(config).run(sockets=[sock])
