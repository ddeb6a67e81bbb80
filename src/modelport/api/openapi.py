"""The OpenAPI document, generated from the pydantic models that validate requests.

Built once per app: the request schemas are exactly what `protocol.validate_request`
accepts, so the document cannot drift from the edge's behaviour.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from modelport.foreign.anthropic_schema import CountTokensRequest, MessagesRequest
from modelport.foreign.openai_responses_schema import ResponsesRequest
from modelport.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
)

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    """Every non-2xx answer, from the gateway or relayed from a model."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorEnvelope(BaseModel):
    """Every non-2xx answer on /v1/messages, in Anthropic's shape."""

    type: str
    error: AnthropicErrorDetail


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {"default": _json(_ref("ErrorEnvelope"), "An error, in OpenAI's envelope")}
_ANTHROPIC_ERRORS = {"default": _json(_ref("AnthropicErrorEnvelope"),
                                      "An error, in Anthropic's envelope")}
_OBJECT = {"type": "object"}
# The key goes in `Authorization: Bearer` or, as Anthropic's clients send it, `x-api-key`.
_AUTH = [{"bearer": []}, {"apiKey": []}]


def _generation(summary: str, schema: str, streams: bool,
                errors: dict[str, Any] = _ERRORS) -> dict[str, Any]:
    ok = _json(_OBJECT)
    if streams:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {"post": {
        "summary": summary, "security": _AUTH,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(schema)}}},
        "responses": {"200": ok, **errors},
    }}


def _get(summary: str, *, auth: bool = True,
         parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": _json(_OBJECT), **_ERRORS}}
    if auth:
        operation["security"] = _AUTH
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _version() -> str:
    try:
        return version("modelport")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
                                     ResponsesRequest, MessagesRequest, CountTokensRequest,
                                     RerankRequest, ErrorEnvelope, AnthropicErrorEnvelope]
    keys, schemas = models_json_schema([(model, "validation") for model in models],
                                       ref_template=_REF)
    assert all(value == _ref(model.__name__) for (model, _), value in keys.items())
    model_path = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    response_path = [{"name": "response_id", "in": "path", "required": True,
                      "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelport", "version": _version(),
                 "description": "OpenAI-compatible API of a modelport gateway, and "
                                "Anthropic's Messages API"},
        "paths": {
            "/v1/chat/completions": _generation("Create a chat completion",
                                                "ChatCompletionRequest", streams=True),
            "/v1/completions": _generation("Create a completion", "CompletionRequest",
                                           streams=True),
            "/v1/embeddings": _generation("Create embeddings", "EmbeddingRequest", streams=False),
            "/v1/messages": _generation("Create a message (Anthropic Messages API)",
                                        "MessagesRequest", streams=True,
                                        errors=_ANTHROPIC_ERRORS),
            "/v1/messages/count_tokens": _generation(
                "Count a message's input tokens (Anthropic Messages API)", "CountTokensRequest",
                streams=False, errors=_ANTHROPIC_ERRORS),
            "/v1/responses": _generation("Create a model response (OpenAI Responses API)",
                                         "ResponsesRequest", streams=True),
            "/v1/responses/{response_id}": {
                **_get("Retrieve a kept response", parameters=response_path),
                "delete": {**_get("Delete a kept response", parameters=response_path)["get"]},
            },
            "/v1/rerank": _generation("Rank documents by relevance to a query", "RerankRequest",
                                      streams=False),
            "/v1/models": _get("List the served models"),
            "/v1/models/{model}": _get("Describe one served model", parameters=model_path),
            "/health": _get("Gateway and model status", auth=False),
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header",
                                           "name": "x-api-key"}},
        },
    }


def openapi_endpoint() -> Any:
    """The route handler, serving bytes encoded once."""
    content = orjson.dumps(openapi_document())

    async def serve(request: Request) -> Response:
        return Response(content, media_type="application/json")

    return serve
