"""Forward a validated OpenAI request to its model (or a fallback) and relay the answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.api.access_log import AccessRecord
from modelport.api.body import read_body
from modelport.api.state import GatewayState
from modelport.api.stream import ModelRenamer, RelayStreamResponse, StreamAccounting, relay_sse
from modelport.config import OpenAIUpstreamModel
from modelport.errors import ModelportError
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
    if getattr(request, "stream", False):
        # Usage is always asked for so every stream can be accounted; the gateway drops
        # the usage event again when the client did not ask for it.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _served_headers(served: Deployment, requested: Deployment) -> dict[str, str]:
    headers = {"x-modelport-model": served.name}
    if served is not requested:
        headers["x-modelport-fallback-from"] = requested.name
    return headers


async def handle(request: Request, endpoint: Endpoint) -> Response | RelayStreamResponse:
    state: GatewayState = request.app.state.gateway
    record = AccessRecord(request.method, request.url.path)
    try:
        response = await _forward(request, endpoint, state, record)
    except ModelportError as error:
        record.status = error.status
        if error.status >= 500:  # why a request failed on our side belongs in its log line
            record.note = f"error={type(error).__name__}: {error.message[:200]!r}"
        record.emit()
        raise
    return response


async def _forward(
    request: Request, endpoint: Endpoint, state: GatewayState, record: AccessRecord
) -> Response | RelayStreamResponse:
    body = await read_body(request, state.config.server.max_body_bytes)
    data = parse_json_body(body)
    parsed = validate_request(endpoint.schema, data)
    record.model = parsed.model  # type: ignore[attr-defined]
    if state.config.server.log_prompts:
        logger.debug("request body %s: %s", request.url.path, body[:4000].decode("utf-8", "replace"))
    unknown = parsed.unknown_fields()
    if unknown:
        logger.debug("accepted unknown fields %s on %s", unknown, request.url.path)
    registry = state.registry
    requested = endpoint.resolve(registry, parsed.model)  # type: ignore[attr-defined]
    record.model = requested.name
    stream = bool(getattr(parsed, "stream", False))
    plan = registry.plan(requested, stream=stream, tools=bool(getattr(parsed, "tools", None)),
                         vision=parsed.has_media_input())
    providers: dict[str, Provider] = state.clients  # type: ignore[assignment]

    if stream:
        async def open_stream(deployment: Deployment) -> OpenedStream:
            return await providers[deployment.name].open_stream(
                endpoint.path, upstream_body(deployment, data, parsed), parsed)

        served, opened = await failover.serve(plan, open_stream)
        record.model = served.name
        return _stream_response(served, requested, opened, parsed, record)

    async def complete(deployment: Deployment) -> UpstreamReply:
        return await providers[deployment.name].complete(
            endpoint.path, upstream_body(deployment, data, parsed), parsed)

    served, reply = await failover.serve(plan, complete)
    served.release()
    record.model = served.name
    return _json_response(served, requested, reply, record)


def _stream_response(served: Deployment, requested: Deployment, opened: OpenedStream,
                     parsed: OpenAIRequest, record: AccessRecord) -> RelayStreamResponse:
    accounting = StreamAccounting()
    wants_usage = bool(getattr(parsed, "wants_usage_in_stream", lambda: False)())

    async def on_close(disconnected: bool) -> None:
        opened.close()  # drops the connection, so the upstream cancels the generation
        served.release()
        record.status = 200
        record.take_usage(accounting.usage)
        if disconnected and not accounting.finished:
            record.note = "client_disconnected"
        record.emit()

    # Local workers already answer with the served name; online APIs use their own ids.
    online = isinstance(served.config, OpenAIUpstreamModel)
    events = relay_sse(
        opened.events, forward_usage=wants_usage, accounting=accounting, label=served.name,
        rename=ModelRenamer(served.name) if online else None,
    )
    return RelayStreamResponse(events, on_close, headers=_served_headers(served, requested))


def _json_response(served: Deployment, requested: Deployment, reply: UpstreamReply,
                   record: AccessRecord) -> Response:
    content = reply.body
    record.status = reply.status
    payload = reply.payload
    if payload is None:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
    if isinstance(payload, dict):
        record.take_usage(payload.get("usage"))
        if payload.get("model", served.name) != served.name or reply.payload is not None:
            payload["model"] = served.name
            content = orjson.dumps(payload)
    record.emit()
    return Response(
        content, status_code=reply.status, media_type="application/json",
        headers={**_served_headers(served, requested), **reply.headers},
    )
