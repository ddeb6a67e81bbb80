"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, for every model.

A Messages request is translated to an OpenAI chat body and served by the chat bridge
(so every engine that chats answers it, with chat's routing, limits, failover and access
log); the answer or chunks are translated back. Errors are rendered in Anthropic's
envelope by the app (api/envelopes), and a stream that fails after its 200 ends with an
Anthropic `error` event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelport.api.access_log import record_of
from modelport.api.body import read_body
from modelport.api.chat_bridge import BridgedAnswer, BridgedStream, bridged_chat
from modelport.api.state import GatewayState
from modelport.api.token_count import count_prompt_tokens
from modelport.api.relay import note_failure
from modelport.errors import ModelportError
from modelport.foreign import anthropic_downstream as anthropic
from modelport.foreign import anthropic_events
from modelport.foreign.anthropic_schema import CountTokensRequest, MessagesRequest, parse
from modelport.protocol import parse_json_body

logger = logging.getLogger("modelport.gateway")

# Answers say how a count was made: "exact" (the model's own template and tokenizer) or
# "estimate" (from the prompt's length), see docs/messages.md.
TOKEN_COUNT_HEADER = "x-modelport-token-count"


async def _read(request: Request, schema: type[CountTokensRequest]) -> CountTokensRequest:
    state: GatewayState = request.app.state.gateway
    body = await read_body(request, state.config.server.max_body_bytes)
    if state.log_bodies:
        logger.debug("request body %s: %s", request.url.path, body[:4000].decode("utf-8", "replace"))
    return parse(schema, parse_json_body(body))


async def create_message(request: Request) -> Response:
    record = record_of(request.scope)
    try:
        parsed: MessagesRequest = await _read(request, MessagesRequest)  # type: ignore[assignment]
        result = await bridged_chat(request, anthropic.chat_body(parsed))
    except ModelportError as error:
        note_failure(record, error)
        raise
    if isinstance(result, BridgedAnswer):
        return JSONResponse(anthropic.message_from_chat(result.payload, parsed.stop_sequences),
                            headers=result.headers)
    writer = anthropic_events.EventWriter(result.served_name, parsed.stop_sequences)
    return result.response(_events(result, writer), end_with=anthropic_events.error_event)


async def _events(stream: BridgedStream,
                  writer: anthropic_events.EventWriter) -> AsyncIterator[bytes]:
    yield writer.start()
    chunks = stream.chunks
    try:
        async for chunk in chunks:
            events = writer.feed(chunk)
            if events:
                yield events
            if writer.stopped:
                break  # a stop sequence ended the turn; closing the stream stops the engine
    except ModelportError as error:
        yield anthropic_events.error_event(error)
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield writer.end()


async def count_message_tokens(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    parsed = await _read(request, CountTokensRequest)
    deployment = state.registry.for_chat(parsed.model)
    record_of(request.scope).model = deployment.name
    # The chat prompt the request would become, so the count is of what the engine reads.
    chat = anthropic.chat_prompt(parsed)
    count, exact = await count_prompt_tokens(deployment, chat)
    return JSONResponse({"input_tokens": count},
                        headers={TOKEN_COUNT_HEADER: "exact" if exact else "estimate",
                                 "x-modelport-model": deployment.name})
