"""Vendors that are not OpenAI-compatible: a pure adapter around the shared HTTP executor.

The adapter module translates; this class only sends what it built through the model's
UpstreamClient and hands back OpenAI bytes. Anthropic's Messages API is the first one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from modelport.sse import DONE, sse_event
from modelport.sse import sse_events
from modelport.config import VendorSpec
from modelport.errors import InvalidRequestError, UpstreamError
from modelport.protocol import ChatCompletionRequest, OpenAIRequest
from modelport.foreign import anthropic_upstream as anthropic
from modelport.providers.base import OpenedStream, primed
from modelport.providers.capabilities import Capabilities
from modelport.providers.upstream import UpstreamClient, UpstreamReply

ANTHROPIC_CAPABILITIES = Capabilities(chat=True, completions=False, embeddings=False,
                                      streaming=True, tools=True)


class AnthropicProvider:
    capabilities = ANTHROPIC_CAPABILITIES

    def __init__(self, client: UpstreamClient, vendor: VendorSpec, *, upstream_model: str,
                 served_name: str) -> None:
        self.client = client
        self._model = upstream_model
        self._name = served_name
        self._default_max_tokens = vendor.default_max_tokens or 4096
        self._ranges = vendor.ranges

    def _body(self, request: OpenAIRequest, stream: bool) -> bytes:
        if not isinstance(request, ChatCompletionRequest):
            raise InvalidRequestError(f"'{self._name}' serves only /v1/chat/completions")
        return orjson.dumps(anthropic.chat_request(
            request, self._model, default_max_tokens=self._default_max_tokens,
            ranges=self._ranges, stream=stream))

    async def complete(self, path: str, body: dict[str, Any],
                       request: OpenAIRequest) -> UpstreamReply:
        reply = await self.client.post(anthropic.PATH, self._body(request, stream=False))
        try:
            payload = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self._name}: upstream answered with invalid JSON") from None
        answer = anthropic.chat_response(payload, self._name)
        return UpstreamReply(200, orjson.dumps(answer), reply.headers, payload=answer)

    async def open_stream(self, path: str, body: dict[str, Any],
                          request: OpenAIRequest) -> OpenedStream:
        response = await self.client.open_stream(anthropic.PATH, self._body(request, stream=True))
        events = self._translate(response)
        try:
            # Anthropic may answer 200 and then an `error` event (overloaded): reading the
            # first event here keeps that failure retryable.
            events = await primed(events)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            response.close()
            raise self.client.transport_error(error) from None
        except BaseException:
            response.close()
            raise
        return OpenedStream(events, response.close)

    async def _translate(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        translator = anthropic.StreamTranslator(self._name)
        async for raw in sse_events(response):
            data = anthropic.event_data(raw)
            if data is None:
                continue
            for chunk in translator.feed(data):
                yield sse_event(chunk)
            if translator.finished:
                yield DONE
                return

    async def close(self) -> None:
        await self.client.close()
