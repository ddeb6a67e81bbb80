"""One OpenAI answer assembled from the chunks of its stream.

llama.cpp's server stops a *streamed* generation when its client goes away, but runs a
non-streaming one to the end for nobody. So the gateway asks llama.cpp workers for a
stream even when its client wants one JSON answer, and builds that answer here: closing
the stream is then how a departed client's generation is stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelport.openai_shapes import chat_message
from modelport.sse import DONE_MARKERS
from modelport.errors import MalformedUpstreamError, normalize_upstream_error


class _Choice:
    __slots__ = ("index", "text", "reasoning", "tool_calls", "logprobs", "finish_reason",
                 "role", "refusal")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: Any = None
        self.finish_reason: str | None = None
        self.role = "assistant"
        self.refusal: str | None = None

    def add_chat(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        if isinstance(delta.get("reasoning_content"), str):
            self.reasoning.append(delta["reasoning_content"])
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        for call in delta.get("tool_calls") or ():
            merged = self.tool_calls.setdefault(
                call.get("index", len(self.tool_calls)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if call.get("id"):
                merged["id"] = call["id"]
            if call.get("type"):
                merged["type"] = call["type"]
            function = call.get("function") or {}
            if function.get("name"):
                merged["function"]["name"] += function["name"]
            if function.get("arguments"):
                merged["function"]["arguments"] += function["arguments"]

    def add_logprobs(self, logprobs: Any) -> None:
        if not isinstance(logprobs, dict):
            return
        if self.logprobs is None:
            self.logprobs = {key: list(value) if isinstance(value, list) else value
                             for key, value in logprobs.items()}
            return
        for key, value in logprobs.items():  # chat: content/refusal; legacy: tokens, ...
            if isinstance(value, list) and isinstance(self.logprobs.get(key), list):
                self.logprobs[key].extend(value)

    def chat_message(self) -> dict[str, Any]:
        return chat_message(
            "".join(self.text) if self.text or not self.tool_calls else None,
            [self.tool_calls[i] for i in sorted(self.tool_calls)],
            role=self.role, refusal=self.refusal, reasoning="".join(self.reasoning))


class CompletionAssembler:
    """Feed it a stream's chunk payloads in order; `answer()` is the non-streaming body."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.head: dict[str, Any] | None = None
        self.usage: Any = None
        self.choices: dict[int, _Choice] = {}

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            raise normalize_upstream_error(502, orjson.dumps(chunk))
        if self.head is None:
            self.head = chunk
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for raw in chunk.get("choices") or ():
            index = raw.get("index", 0)
            choice = self.choices.get(index)
            if choice is None:
                choice = self.choices[index] = _Choice(index)
            if self.chat:
                choice.add_chat(raw.get("delta") or {})
            elif isinstance(raw.get("text"), str):
                choice.text.append(raw["text"])
            choice.add_logprobs(raw.get("logprobs"))
            if raw.get("finish_reason"):
                choice.finish_reason = raw["finish_reason"]

    def answer(self) -> dict[str, Any]:
        head = self.head or {}
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            shaped: dict[str, Any] = {"index": index, "logprobs": choice.logprobs,
                                      "finish_reason": choice.finish_reason}
            if self.chat:
                shaped["message"] = choice.chat_message()
            else:
                shaped["text"] = "".join(choice.text)
            choices.append(shaped)
        answer: dict[str, Any] = {
            "id": head.get("id", ""), "object": "chat.completion" if self.chat
            else "text_completion", "created": head.get("created", 0),
            "model": head.get("model", ""), "choices": choices,
        }
        if head.get("system_fingerprint") is not None:
            answer["system_fingerprint"] = head["system_fingerprint"]
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer


async def assemble(events: AsyncIterator[bytes], *, chat: bool, label: str) -> dict[str, Any]:
    """The answer the stream `events` spells out; a malformed or unfinished stream is a 502."""
    assembler = CompletionAssembler(chat)
    async for event in events:
        if event.startswith(DONE_MARKERS):
            return assembler.answer()
        data = event[event.find(b"data:") + 5:] if b"data:" in event else b""
        if not data.strip() or data.strip() == b"null":
            continue  # llama.cpp opens a stream of several prompts with `data: null`
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise MalformedUpstreamError(f"{label}: worker sent a stream event that is not JSON")
        assembler.feed(chunk)
    raise MalformedUpstreamError(f"{label}: worker closed the stream before it finished")
