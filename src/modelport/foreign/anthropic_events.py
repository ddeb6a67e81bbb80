"""OpenAI chat.completion.chunk dicts -> Anthropic Messages stream events, for the clients
of /v1/messages."""

from __future__ import annotations

from typing import Any

import orjson

from modelport.errors import ModelportError
from modelport.foreign.anthropic_downstream import StopMatcher, error_body, message_id, stop_reason
from modelport.foreign.anthropic_mapping import anthropic_usage, tool_use_id


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(error: ModelportError) -> bytes:
    """How a stream that failed after its 200 ends for an Anthropic client."""
    return sse("error", error_body(error))


class EventWriter:
    """OpenAI chat.completion.chunk dicts -> Anthropic stream events, one stream each.

    Text opens a text block, each tool call its own tool_use block (its arguments as
    input_json_delta); `end` closes the open block and sends the stop reason and usage."""

    def __init__(self, model: str, stop_sequences: list[str] | None) -> None:
        self.model = model
        self.id = message_id()
        self.matcher = StopMatcher(stop_sequences)
        self._index = -1
        self._open: str | None = None  # "text" or "tool_use"
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._content_chunks = 0

    @property
    def stopped(self) -> bool:
        """A stop sequence ended the turn: nothing more is to be read."""
        return self.matcher.matched is not None

    def start(self) -> bytes:
        return sse("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            # the engine reports input tokens with the last chunk: message_delta carries them
            "usage": {"input_tokens": 0, "output_tokens": 0}}}) + sse("ping", {"type": "ping"})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out = b""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._content_chunks += 1
                out += self._text(self.matcher.feed(delta["content"]))
                if self.stopped:
                    return out
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        out = self._text(self.matcher.flush()) + self._close_block()
        usage = anthropic_usage(self._usage)
        if not self._usage:
            # A stop sequence ended the stream before the engine's usage chunk: engines
            # stream one token per chunk, so the chunks read are the tokens generated.
            usage["output_tokens"] = self._content_chunks
        reason = stop_reason(self._finish_reason, self.matcher, bool(self._tool_blocks))
        return out + sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": self.matcher.matched},
            "usage": {"output_tokens": usage["output_tokens"],
                      "input_tokens": usage["input_tokens"]},
        }) + sse("message_stop", {"type": "message_stop"})

    def _start_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._open = kind
        return out + sse("content_block_start", {"type": "content_block_start",
                                                 "index": self._index, "content_block": block})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        out = b"" if self._open == "text" else self._start_block("text", {"type": "text",
                                                                          "text": ""})
        return out + sse("content_block_delta", {
            "type": "content_block_delta", "index": self._index,
            "delta": {"type": "text_delta", "text": text}})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        out = b""
        if position not in self._tool_blocks:
            out += self._text(self.matcher.flush())  # text before the call is final
            out += self._start_block("tool_use", {"type": "tool_use",
                                                  "id": call.get("id") or tool_use_id(),
                                                  "name": function.get("name") or "",
                                                  "input": {}})
            self._tool_blocks[position] = self._index
        arguments = function.get("arguments")
        if arguments and self._tool_blocks[position] == self._index:
            out += sse("content_block_delta", {
                "type": "content_block_delta", "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out
