"""build_app(state): the gateway's routes, error mapping and lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router, request_response

from modelport.api import relay, responses
from modelport.api.access_log import AccessLog
from modelport.api.admin import MasterKeyGate, admin_app
from modelport.api.auth import BearerAuth
from modelport.api.console import ConsoleFiles, to_console
from modelport.api.envelopes import error_payload
from modelport.api.health import health, readiness
from modelport.api.hot_routes import HotRoutes
from modelport.api.messages import count_message_tokens, create_message
from modelport.api.key_checks import FinishedRequests
from modelport.api.metrics import GatewayMetrics, metrics_endpoint
from modelport.api.metrics_history import MetricsHistory
from modelport.limits.counters import RedisCounters
from modelport.limits.local import LocalKeyLimiter
from modelport.limits.shared import SharedKeyLimiter
from modelport.api.models import get_model, list_models
from modelport.api.openapi import openapi_endpoint
from modelport.api.state import GatewayState, Service
from modelport.errors import InvalidRequestError, ModelportError, error_http

logger = logging.getLogger("modelport.gateway")


async def chat_completions(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.CHAT)


async def completions(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.COMPLETIONS)


async def embeddings(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.EMBEDDINGS)


async def rerank(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.RERANK)


async def transcriptions(request: Request):  # noqa: ANN201
    return await relay.handle(request, relay.TRANSCRIPTIONS)


def _error_response(request: Request, error: ModelportError) -> Response:
    status, headers, body = error_http(error, error_payload(request.url.path, error))
    return Response(body, status_code=status, headers=headers)


async def _on_modelport_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ModelportError)
    return _error_response(request, error)


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = {
        404: f"Unknown route {request.method} {request.url.path}",
        405: f"Method {request.method} is not allowed on {request.url.path}",
    }.get(error.status_code, str(error.detail))
    typed = (InvalidRequestError if error.status_code < 500 else ModelportError)(
        message, headers=getattr(error, "headers", None))
    typed.status = error.status_code
    return _error_response(request, typed)


async def _on_unexpected(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(request, ModelportError(f"internal error: {type(error).__name__}"))


def _v1_routes() -> list[Route]:
    return [
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{model:path}", get_model, methods=["GET"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
        Route("/responses", responses.create_response, methods=["POST"]),
        Route("/responses/{response_id}", responses.get_response, methods=["GET"]),
        Route("/responses/{response_id}", responses.delete_response, methods=["DELETE"]),
        Route("/messages", create_message, methods=["POST"]),
        Route("/messages/count_tokens", count_message_tokens, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
        Route("/audio/transcriptions", transcriptions, methods=["POST"]),
    ]


def build_app(state: GatewayState) -> AccessLog:
    server = state.config.server
    v1_routes = _v1_routes()
    # Virtual keys work once the admin API that makes them is on (a master key is set).
    virtual_keys = state.keys if server.master_key else None
    # The /v1 mount and the hot routes (hot_routes.py) each check keys; a reload's keys
    # reach both.
    guarded: list[BearerAuth] = []

    def guard(app) -> BearerAuth:  # noqa: ANN001
        guarded.append(BearerAuth(app, server.api_keys, master_key=server.master_key,
                                  virtual_keys=virtual_keys))
        return guarded[-1]

    def use_keys(config) -> None:  # noqa: ANN001
        for gate in guarded:
            gate.use_keys(config.api_keys, config.master_key)

    auth = guard(Router(routes=v1_routes))
    admin = admin_app(state)
    state.key_gates = [use_keys, lambda s: admin.use_key(s.master_key)]
    tokens_used = state.keys.tokens_used if state.keys else None
    state.limiter = (SharedKeyLimiter(RedisCounters(server.redis_url), tokens_used,
                                      on_outage=server.limits_on_outage)
                     if server.redis_url else LocalKeyLimiter(tokens_used))
    state.finished = FinishedRequests(state.usage if server.usage else None)
    observers: list = [state.finished]
    routes = [
        Route("/", to_console, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", readiness, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint(), methods=["GET"]),
        Mount("/v1", app=auth),
        Mount("/admin", app=admin),
        Mount("/ui", app=ConsoleFiles()),
    ]
    if server.metrics:
        observers.insert(0, _with_metrics(state, v1_routes, routes))
    handlers = {ModelportError: _on_modelport_error, HTTPException: _on_http_error}
    app = Starlette(
        routes=routes,
        exception_handlers={**handlers, Exception: _on_unexpected},
        lifespan=_lifespan(state),
    )
    app.state.gateway = state
    state.log_bodies = server.log_prompts or logger.isEnabledFor(logging.DEBUG)
    hot = HotRoutes(app, {"/v1/chat/completions": chat_completions,
                          "/v1/completions": completions, "/v1/embeddings": embeddings},
                    handlers=handlers, unexpected=_on_unexpected, guard=guard)
    return AccessLog(hot, observers=observers)


def _with_metrics(state: GatewayState, v1_routes: list[Route], routes: list) -> Callable:
    """/metrics (behind the master key when metrics_auth) and the history the console
    charts; the observer that counts each finished request."""
    server = state.config.server
    state.metrics = GatewayMetrics(state.registry, ["/v1" + r.path for r in v1_routes
                                                    if "{" not in r.path],
                                   peers=lambda: state.peer_metrics.snapshots()
                                   if state.peer_metrics is not None else ())
    state.metrics_history = MetricsHistory(state.metrics, state.registry)
    scrape = metrics_endpoint
    if server.metrics_auth:
        gate = MasterKeyGate(request_response(metrics_endpoint), server.master_key)
        state.key_gates.append(lambda s: gate.use_key(s.master_key))
        scrape = gate
    routes.insert(2, Route("/metrics", scrape, methods=["GET"]))
    return state.metrics.observe


def _lifespan(state: GatewayState) -> Callable:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        started: list[Service] = []
        try:
            for service in state.ordered_services():
                await service.start()
                started.append(service)
            _tune_collector()
            yield
        finally:
            for service in reversed(started):
                await service.stop()

    return lifespan


def _tune_collector() -> None:
    # Everything built so far lives as long as the process; left to the collector, each
    # full collection walks it again (hundreds of thousands of objects once the database
    # and HTTP libraries are loaded), and requests that keep objects alive for a while
    # (usage rows waiting for their batch) make those frequent.
    gc.freeze()
    # A request allocates thousands of objects that refcounting frees within milliseconds;
    # with the default threshold (700) the collector ran every few requests and walked
    # every request still in flight each time. 20,000 lets most of them go first
    # (measured: 15-25% less gateway CPU a request at 64 in flight).
    gc.set_threshold(20_000, 10, 10)
