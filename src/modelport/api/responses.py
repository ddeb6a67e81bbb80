"""`/v1/responses`: the OpenAI Responses API, served by the chat path of any chat model.

The request is translated to a chat body (foreign/openai_responses.py), answered through the
chat bridge, and the answer or chunk stream translated back. Answers are kept in memory
(unless `store: false`) so that `previous_response_id` and `GET /v1/responses/{id}` work.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelport.api.access_log import record_of
from modelport.api.body import read_body
from modelport.api.chat_bridge import BridgedAnswer, BridgedStream, bridged_chat
from modelport.api.relay import note_failure
from modelport.api.response_store import ResponseStore, StoredResponse
from modelport.api.state import GatewayState
from modelport.errors import InvalidRequestError, ModelportError, NotFoundError
from modelport.foreign.openai_responses import (
    ResponseEvents,
    chat_body,
    conversation_items,
    input_items,
    response_from_chat,
    response_shell,
    sse_frame,
)
from modelport.foreign.openai_responses_schema import ResponsesRequest, unsupported_feature
from modelport.protocol import parse_json_body, validate_request

logger = logging.getLogger("modelport.gateway")


def _history(store: ResponseStore, previous_id: str | None) -> list[dict[str, Any]]:
    if previous_id is None:
        return []
    stored = store.get(previous_id)
    if stored is None:
        raise InvalidRequestError(
            f"Previous response with id '{previous_id}' not found: modelport keeps the last "
            f"{store.max_responses} responses in memory (not those sent with store: false, "
            "nor across restarts)", param="previous_response_id",
            code="previous_response_not_found")
    return stored.items


async def _parsed_request(request: Request, state: GatewayState) -> ResponsesRequest:
    body = await read_body(request, state.config.server.max_body_bytes)
    if state.log_bodies:
        logger.debug("request body %s: %s", request.url.path, body[:4000].decode("utf-8", "replace"))
    data = parse_json_body(body)
    refused = unsupported_feature(data)
    if refused is not None:
        raise refused
    parsed = validate_request(ResponsesRequest, data)
    record_of(request.scope).model = parsed.model
    unknown = parsed.unknown_fields()
    if unknown:
        logger.debug("accepted unknown fields %s on %s", unknown, request.url.path)
    return parsed


async def create_response(request: Request) -> Response:
    try:
        return await _create(request)
    except ModelportError as error:
        note_failure(record_of(request.scope), error)
        raise


async def _create(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    parsed = await _parsed_request(request, state)
    history = _history(state.responses, parsed.previous_response_id)
    items = history + input_items(parsed)
    result = await bridged_chat(request, chat_body(parsed, history))
    shell = response_shell(parsed, model=result.served_name)

    def keep(response: dict[str, Any]) -> None:
        if parsed.store is not False:
            state.responses.put(response, conversation_items(items, response))

    if isinstance(result, BridgedAnswer):
        response = response_from_chat(shell, result.payload)
        keep(response)
        return Response(orjson.dumps(response), media_type="application/json",
                        headers=result.headers)
    return _stream(result, ResponseEvents(shell), keep)


def _stream(result: BridgedStream, translator: ResponseEvents,
            keep: Callable[[dict[str, Any]], None]) -> Response:
    async def events() -> AsyncIterator[bytes]:
        for event in translator.start():
            yield sse_frame(event)
        try:
            async for chunk in result.chunks:
                frames = b"".join(sse_frame(event) for event in translator.feed(chunk))
                if frames:
                    yield frames
        except ModelportError as error:
            yield b"".join(sse_frame(event) for event in translator.fail(error))
            return
        finished = translator.finish()
        keep(finished[-1]["response"])
        yield b"".join(sse_frame(event) for event in finished)

    def end_with(error: ModelportError) -> bytes:
        return b"".join(sse_frame(event) for event in translator.fail(error))

    return result.response(events(), end_with)


def _stored(request: Request) -> tuple[ResponseStore, StoredResponse]:
    store = request.app.state.gateway.responses
    response_id = request.path_params["response_id"]
    stored = store.get(response_id)
    if stored is None:
        raise NotFoundError(f"No response with id '{response_id}' is kept here",
                            param="response_id", code="response_not_found")
    return store, stored


async def get_response(request: Request) -> Response:
    _, stored = _stored(request)
    return Response(orjson.dumps(stored.response), media_type="application/json")


async def delete_response(request: Request) -> Response:
    store, stored = _stored(request)
    store.delete(stored.response["id"])
    return JSONResponse({"id": stored.response["id"], "object": "response", "deleted": True})
