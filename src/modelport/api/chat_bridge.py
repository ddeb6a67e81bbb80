"""The chat path, for routes that speak another API (Anthropic Messages, OpenAI Responses).

Such a route translates its request into an OpenAI chat body and hands it here; the body is
validated, routed, failed over, cancelled on disconnect and logged exactly as a request to
/v1/chat/completions, and the answer comes back as parsed dicts for the route to translate
back. So every engine that can chat serves every chat-shaped API without knowing of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request

from modelport.api import relay
from modelport.api.access_log import record_of
from modelport.api.state import GatewayState
from modelport.api.stream import DONE_MARKERS, RelayStreamResponse, event_data
from modelport.errors import MalformedUpstreamError, ModelportError, UpstreamError
from modelport.protocol import ChatCompletionRequest, validate_request
from modelport.providers.base import OpenedStream


class BridgedAnswer:
    """A whole chat answer: `payload` is an OpenAI `chat.completion` (model = served name)."""

    __slots__ = ("payload", "headers", "served_name")

    def __init__(self, payload: dict[str, Any], headers: dict[str, str], served_name: str) -> None:
        self.payload = payload
        self.headers = headers
        self.served_name = served_name


class BridgedStream:
    """A chat answer as it is generated: `chunks` yields OpenAI `chat.completion.chunk`
    dicts, the usage chunk (`choices: []`) last, and raises a ModelportError when the stream
    fails after it started. `response` turns the route's own events into the ASGI answer."""

    def __init__(self, relayed: relay.RelayedStream, outcome: relay.Outcome,
                 request: Request) -> None:
        self._relayed = relayed
        self._request = request
        self.headers = outcome.headers
        self.served_name = outcome.served.name
        self.chunks: AsyncIterator[dict[str, Any]] = self._parsed(relayed.events)

    async def _parsed(self, events: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
        label = self.served_name
        async for event in events:
            if event.startswith(DONE_MARKERS):
                return
            data = event_data(event, label)
            if data is None:
                continue  # a comment or keep-alive
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):  # only possible from our own (trusted) workers
                raise MalformedUpstreamError(f"{label}: a stream event is not a JSON object")
            if "error" in chunk and "choices" not in chunk:
                # The relay ends a failed stream with an error event and keeps the typed
                # failure; an error event the upstream itself sent has only its message.
                failure = self._relayed.accounting.error
                if failure is None:
                    failure = UpstreamError(f"{label}: {_error_message(chunk['error'])}")
                raise failure
            yield chunk
        raise MalformedUpstreamError(f"{label}: the stream ended without [DONE]")

    def response(self, events: AsyncIterator[bytes],
                 end_with: Callable[[ModelportError], bytes]) -> RelayStreamResponse:
        state: GatewayState = self._request.app.state.gateway
        return RelayStreamResponse(events, self._relayed.on_close, headers=self.headers,
                                   in_flight=state.in_flight, end_with=end_with)


def _error_message(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return str(error)[:200]


async def bridged_chat(request: Request, chat_body: dict[str, Any]) -> BridgedAnswer | BridgedStream:
    """Serve `chat_body` (an OpenAI chat.completions body) as /v1/chat/completions would."""
    record = record_of(request.scope)
    try:
        parsed = validate_request(ChatCompletionRequest, chat_body)
        outcome = await relay.serve(request, relay.CHAT, chat_body, parsed)
        if isinstance(outcome.answer, OpenedStream):
            relayed = relay.RelayedStream(outcome, record, forward_usage=True)
            return BridgedStream(relayed, outcome, request)
        try:
            payload, _ = relay.answer_payload(outcome, record)
        finally:
            outcome.release()
    except ModelportError as error:
        relay.note_failure(record, error)
        raise
    return BridgedAnswer(payload, outcome.headers, outcome.served.name)
