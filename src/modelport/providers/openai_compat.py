"""OpenAI-compatible upstreams: local workers, `engine: openai` and every vendor entry.

The request body and the answer's bytes pass through; only a vendor's quirks (from the
vendors file) change the body, and only vendors that report errors inside a 200 answer
have their answers parsed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from modelport.multipart import encode_form, is_form
from modelport.sse import sse_events
from modelport.config import VendorSpec
from modelport.errors import UpstreamError
from modelport.protocol import OpenAIRequest
from modelport.providers.base import OpenedStream
from modelport.providers.forced_tools import as_tool_calls, forced_body, forced_function_names
from modelport.providers.stream_assembly import assemble
from modelport.providers.quirks import apply_quirks, body_error, has_body_quirks
from modelport.providers.capabilities import Capabilities
from modelport.tools.support import HERMES, JSON
from modelport.providers.upstream import UpstreamClient, UpstreamReply


_GENERATIONS = {"/chat/completions": True, "/completions": False}  # path -> is chat


class OpenAICompatProvider:
    """`stream_always`: ask for a stream even for a non-streaming request and assemble the
    answer (for llama.cpp workers, which only stop a generation whose stream is closed)."""

    def __init__(self, client: UpstreamClient, capabilities: Capabilities,
                 vendor: VendorSpec | None = None, *, stream_always: bool = False,
                 tool_format: str | None = None) -> None:
        self.client = client
        self._stream_always = stream_always
        # Set for llama.cpp workers: tool_choice required/named is forced by our grammar.
        self._forcing_format = tool_format if tool_format in (HERMES, JSON) else None
        self.capabilities = capabilities
        self._quirks = vendor if vendor is not None and has_body_quirks(vendor) else None
        self._errors_in_body = vendor if vendor is not None and vendor.error_code_field else None

    async def complete(self, path: str, body: dict[str, Any],
                       request: OpenAIRequest) -> UpstreamReply:
        if self._quirks is not None:
            body = apply_quirks(self._quirks, body)
        if self._stream_always and path in _GENERATIONS:
            return await self._assembled(path, body, request)
        if is_form(body):
            return await self.client.post(path, *encode_form(body))
        reply = await self.client.post(path, orjson.dumps(body))
        if self._errors_in_body is not None:
            reply.payload = _json_or_none(reply.body)
            error = body_error(self._errors_in_body, reply.payload, self.client.label)
            if error is not None:
                raise error
            if isinstance(reply.payload, dict) and "model" not in reply.payload:
                # Such vendors (Spark) also leave out fields OpenAI clients read.
                reply.payload["model"] = self.client.label
        return reply

    async def _assembled(self, path: str, body: dict[str, Any],
                         request: OpenAIRequest) -> UpstreamReply:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        body, rewrite = self._tool_forcing(body, request)
        response = await self.client.open_stream(path, orjson.dumps(body))
        try:
            answer = await assemble(rewrite(sse_events(response)), chat=_GENERATIONS[path],
                                    label=self.client.label)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self.client.transport_error(error) from None
        finally:
            response.close()  # on cancellation too: closing is what stops the generation
        return UpstreamReply(200, b"", {}, payload=answer)

    async def open_stream(self, path: str, body: dict[str, Any],
                          request: OpenAIRequest) -> OpenedStream:
        if self._quirks is not None:
            body = apply_quirks(self._quirks, body)
        body, rewrite = self._tool_forcing(body, request)
        response = await self.client.open_stream(path, orjson.dumps(body))
        if response.content_type == "application/json":
            # A JSON body where a stream was asked for: a vendor reporting a failure with
            # a 200 (MiniMax, Spark), or an upstream that ignored `stream`.
            payload = _json_or_none(await self.client.read_whole(response))
            error = body_error(self._errors_in_body, payload, self.client.label) \
                if self._errors_in_body is not None else None
            raise error or UpstreamError(
                f"{self.client.label}: upstream answered a stream request with a JSON body")
        return OpenedStream(rewrite(sse_events(response)), response.close)

    def _tool_forcing(self, body: dict[str, Any], request: OpenAIRequest) -> tuple[
            dict[str, Any], Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]]:
        names = forced_function_names(request) if self._forcing_format else None
        if names is None:
            return body, _unchanged
        return (forced_body(body, names, self._forcing_format),  # type: ignore[arg-type]
                lambda events: as_tool_calls(events, names))

    async def close(self) -> None:
        await self.client.close()


def _unchanged(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    return events


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
