"""Forward a validated OpenAI request to its model (or a fallback) and relay the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.api.access_log import AccessRecord, record_of
from modelport.api.body import read_body
from modelport.api.inflight import InFlight
from modelport.api.state import GatewayState
from modelport.api.stream import ModelRenamer, RelayStreamResponse, StreamAccounting, relay_sse
from modelport.config import OpenAIUpstreamModel
from modelport.errors import ClientDisconnectedError, MalformedUpstreamError, ModelportError
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIRequest,
    parse_json_body,
    validate_request,
)
from modelport.providers.base import OpenedStream, Provider
from modelport.routing import failover
from modelport.routing.deployments import Deployment
from modelport.routing.registry import ModelRegistry
from modelport.upstream import UpstreamReply

logger = logging.getLogger("modelport.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    path: str
    schema: type[OpenAIRequest]
    embeddings: bool = False

    def resolve(self, registry: ModelRegistry, name: str) -> Deployment:
        if self.embeddings:
            return registry.for_embeddings(name)
        if self.schema is CompletionRequest:
            return registry.for_completions(name)
        return registry.for_chat(name)


CHAT = Endpoint("/chat/completions", ChatCompletionRequest)
COMPLETIONS = Endpoint("/completions", CompletionRequest)
EMBEDDINGS = Endpoint("/embeddings", EmbeddingRequest, embeddings=True)


def upstream_body(deployment: Deployment, data: dict[str, Any], request: OpenAIRequest) -> dict[str, Any]:
    """The body sent upstream: the client's own fields, with only what must change changed."""
    body = dict(data)
    body["model"] = deployment.upstream_model
    if deployment.is_local and isinstance(request, ChatCompletionRequest):
        # Local engines know max_tokens; newer clients send max_completion_tokens.
        limit = request.output_limit()
        body.pop("max_completion_tokens", None)
        if limit is not None:
            body["max_tokens"] = limit
        body["messages"] = [_without_nulls(m) for m in body["messages"]]
    if getattr(request, "stream", False):
        # Usage is always asked for so every stream can be accounted; the gateway drops
        # the usage event again when the client did not ask for it.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _wants_tools(request: OpenAIRequest) -> bool:
    """Tools the model may call; with tool_choice none they are only context."""
    return bool(getattr(request, "tools", None)) and getattr(request, "tool_choice", None) != "none"


def _without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp fails with a 500 on an explicit null in an optional message field (`name`,
    `tool_call_id`, an assistant's `content` beside its tool calls); null means absent."""
    if None not in message.values():
        return message
    return {key: value for key, value in message.items() if value is not None}


def _served_headers(served: Deployment, requested: Deployment) -> dict[str, str]:
    headers = {"x-modelport-model": served.name}
    if served is not requested:
        headers["x-modelport-fallback-from"] = requested.name
    return headers


async def handle(request: Request, endpoint: Endpoint) -> Response | RelayStreamResponse:
    state: GatewayState = request.app.state.gateway
    record = record_of(request.scope)
    try:
        return await _forward(request, endpoint, state, record)
    except ModelportError as error:
        if error.status >= 500:  # why a request failed on our side belongs in its log line
            record.note = f"error={type(error).__name__}: {error.message[:200]!r}"
        elif isinstance(error, ClientDisconnectedError):
            record.note = "client_disconnected"
        raise


async def _forward(
    request: Request, endpoint: Endpoint, state: GatewayState, record: AccessRecord
) -> Response | RelayStreamResponse:
    body = await read_body(request, state.config.server.max_body_bytes)
    if state.log_bodies:
        logger.debug("request body %s: %s", request.url.path, body[:4000].decode("utf-8", "replace"))
    data = parse_json_body(body)
    parsed = validate_request(endpoint.schema, data)
    record.model = parsed.model  # type: ignore[attr-defined]
    unknown = parsed.unknown_fields()
    if unknown:
        logger.debug("accepted unknown fields %s on %s", unknown, request.url.path)
    registry = state.registry
    requested = endpoint.resolve(registry, parsed.model)  # type: ignore[attr-defined]
    record.model = requested.name
    stream = bool(getattr(parsed, "stream", False))
    plan = registry.plan(requested, stream=stream, tools=_wants_tools(parsed),
                         vision=parsed.has_media_input())
    providers: dict[str, Provider] = state.clients  # type: ignore[assignment]

    if stream:
        async def open_stream(deployment: Deployment) -> OpenedStream:
            return await providers[deployment.name].open_stream(
                endpoint.path, upstream_body(deployment, data, parsed), parsed)

        served, opened = await _unless_client_leaves(
            request, state.in_flight, failover.serve(plan, open_stream))
        record.model = served.name
        return _stream_response(served, requested, opened, parsed, record, state.in_flight)

    async def complete(deployment: Deployment) -> UpstreamReply:
        return await providers[deployment.name].complete(
            endpoint.path, upstream_body(deployment, data, parsed), parsed)

    served, reply = await _unless_client_leaves(
        request, state.in_flight, failover.serve(plan, complete))
    try:
        record.model = served.name
        return _json_response(served, requested, reply, record)
    finally:
        served.release()


class _Waiting:
    """A request waiting for its upstream's answer, which a disconnect or a shutdown stops."""

    __slots__ = ("task", "error")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.error: ModelportError | None = None

    def stop(self, error: ModelportError) -> None:
        if self.error is None:
            self.error = error
        self.task.cancel()


async def _unless_client_leaves(request: Request, in_flight: InFlight, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client disconnects first: then the work is cancelled
    (which closes the upstream connection, so the engine stops generating and the slot is
    freed) instead of running to the end for nobody."""
    loop = asyncio.get_running_loop()
    waiting = _Waiting(loop.create_task(work))  # type: ignore[arg-type]
    watcher = loop.create_task(_stop_on_disconnect(request.receive, waiting))
    in_flight.add(waiting)
    try:
        return await waiting.task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if waiting.error is None or (current is not None and current.cancelling()):
            raise  # this handler itself is being cancelled
        raise waiting.error from None
    finally:
        in_flight.discard(waiting)
        watcher.cancel()


async def _stop_on_disconnect(receive: Callable[[], Awaitable[dict]], waiting: _Waiting) -> None:
    # The body has been read, so the next message is the disconnect (or nothing at all).
    while (await receive())["type"] != "http.disconnect":
        pass
    waiting.stop(ClientDisconnectedError("the client closed the connection before the answer"))


def _stream_response(served: Deployment, requested: Deployment, opened: OpenedStream,
                     parsed: OpenAIRequest, record: AccessRecord,
                     in_flight: InFlight) -> RelayStreamResponse:
    accounting = StreamAccounting()
    wants_usage = bool(getattr(parsed, "wants_usage_in_stream", lambda: False)())

    async def on_close(disconnected: bool, ended_with: ModelportError | None) -> None:
        opened.close()  # drops the connection, so the upstream cancels the generation
        served.release()
        record.take_usage(accounting.usage)
        error = ended_with or accounting.error
        if error is not None:
            record.note = f"stream_error={type(error).__name__}: {error.message[:200]!r}"
        elif disconnected and not accounting.finished:
            record.note = "client_disconnected"

    # Local workers already answer with the served name; online APIs use their own ids.
    online = isinstance(served.config, OpenAIUpstreamModel)
    events = relay_sse(
        opened.events, forward_usage=wants_usage, accounting=accounting, label=served.name,
        rename=ModelRenamer(served.name) if online else None,
        validate=not served.is_local,
    )
    return RelayStreamResponse(events, on_close, headers=_served_headers(served, requested),
                               in_flight=in_flight)


def _json_response(served: Deployment, requested: Deployment, reply: UpstreamReply,
                   record: AccessRecord) -> Response:
    """The upstream's answer with the served model's name; anything but a JSON object
    (garbage, HTML, an SSE body where JSON was asked for) is a 502, never relayed."""
    content = reply.body
    payload = reply.payload
    if payload is None:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise MalformedUpstreamError(
                f"{served.name}: upstream answered with a body that is not a JSON object: "
                f"{content[:80].decode('utf-8', 'replace')!r}")
    record.take_usage(payload.get("usage"))
    if payload.get("model", served.name) != served.name or reply.payload is not None:
        payload["model"] = served.name
        content = orjson.dumps(payload)
    return Response(
        content, status_code=reply.status, media_type="application/json",
        headers={**_served_headers(served, requested), **reply.headers},
    )
