"""Forward a validated OpenAI request to its deployment and relay the answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.api.access_log import AccessRecord
from modelport.api.body import read_body
from modelport.api.stream import RelayStreamResponse, StreamAccounting, relay_events
from modelport.api.state import GatewayState
from modelport.errors import ModelportError
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIRequest,
    parse_json_body,
    validate_request,
)
from modelport.routing.deployments import Deployment

logger = logging.getLogger("modelport.gateway")


@dataclass(frozen=True)
class Endpoint:
    path: str
    schema: type[OpenAIRequest]
    embeddings: bool = False


CHAT = Endpoint("/chat/completions", ChatCompletionRequest)
COMPLETIONS = Endpoint("/completions", CompletionRequest)
EMBEDDINGS = Endpoint("/embeddings", EmbeddingRequest, embeddings=True)


def upstream_body(deployment: Deployment, data: dict[str, Any], request: OpenAIRequest) -> dict[str, Any]:
    """The body sent upstream: the client's own fields, with only what must change changed."""
    body = dict(data)
    body["model"] = deployment.upstream_model
    if deployment.engine != "openai" and isinstance(request, ChatCompletionRequest):
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


def _model_rewrite(deployment: Deployment) -> list[tuple[bytes, bytes]] | None:
    """Byte replacements that rename the upstream's model id in stream events (both the
    compact and the spaced JSON styles upstreams emit)."""
    if deployment.upstream_model == deployment.name:
        return None
    old, new = orjson.dumps(deployment.upstream_model), orjson.dumps(deployment.name)
    return [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]


async def handle(request: Request, endpoint: Endpoint) -> Response | RelayStreamResponse:
    state: GatewayState = request.app.state.gateway
    record = AccessRecord(request.method, request.url.path)
    try:
        response = await _forward(request, endpoint, state, record)
    except ModelportError as error:
        record.status = error.status
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
    deployment = (
        registry.for_embeddings(parsed.model)  # type: ignore[attr-defined]
        if endpoint.embeddings
        else registry.for_chat(parsed.model)  # type: ignore[attr-defined]
    )
    record.model = deployment.name
    forwarded = orjson.dumps(upstream_body(deployment, data, parsed))
    client = state.clients[deployment.name]
    deployment.acquire()
    if getattr(parsed, "stream", False):
        try:
            upstream = await client.open_stream(endpoint.path, forwarded)
        except BaseException:
            deployment.release()
            raise
        accounting = StreamAccounting()
        wants_usage = bool(getattr(parsed, "wants_usage_in_stream", lambda: False)())

        async def on_close(disconnected: bool) -> None:
            upstream.close()  # drops the connection, so the worker cancels the generation
            deployment.release()
            record.status = 200
            record.take_usage(accounting.usage)
            if disconnected and not accounting.finished:
                record.note = "client_disconnected"
            record.emit()

        events = relay_events(
            upstream, forward_usage=wants_usage, model_rewrite=_model_rewrite(deployment),
            accounting=accounting, label=deployment.name,
        )
        return RelayStreamResponse(events, on_close, headers={"x-modelport-model": deployment.name})
    try:
        reply = await client.post(endpoint.path, forwarded)
    finally:
        deployment.release()
    content = reply.body
    record.status = reply.status
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        record.take_usage(payload.get("usage"))
        if deployment.upstream_model != deployment.name and "model" in payload:
            payload["model"] = deployment.name
            content = orjson.dumps(payload)
    record.emit()
    return Response(
        content, status_code=reply.status, media_type="application/json",
        headers={"x-modelport-model": deployment.name, **reply.headers},
    )
