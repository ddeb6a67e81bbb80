"""OpenAI chat completions -> an Anthropic vendor's Messages API, and its answers back.

System/developer messages become `system`, content parts and tool calls become content
blocks, tool results become user `tool_result` blocks; answers, stream events, stop reasons,
usage and errors come back in the shapes OpenAI clients expect.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelport.errors import (
    InvalidRequestError,
    ModelportError,
    PayloadTooLargeError,
    UpstreamError,
    normalize_upstream_error,
)
from modelport.foreign.anthropic_mapping import (
    CHOICE_TYPES,
    ERROR_STATUS,
    STOP_REASONS,
    tool_call,
    tool_use_block,
)
from modelport.protocol import ChatCompletionRequest, ChatMessage
from modelport.openai_shapes import ChunkWriter, chat_completion, usage_dict

PATH = "/messages"


def _unsupported(what: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"the Anthropic API does not support {what}", param=param)


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks = []
    for part in message.content or []:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise _unsupported(f"content parts of type '{kind}'", "messages")
    return blocks


def _tool_use_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    blocks = []
    for call in message.tool_calls or []:
        block = tool_use_block(call)  # type: ignore[arg-type]
        if block is None:
            raise InvalidRequestError("tool call arguments must be a JSON object",
                                      param="messages")
        blocks.append(block)
    return blocks


def _turns(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system text, alternating user/assistant turns) from OpenAI messages."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            system.append(message.text())
            continue
        if message.role == "function":
            raise _unsupported("the deprecated 'function' role (use 'tool')", "messages")
        if message.role == "tool":
            role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": message.tool_call_id,
                       "content": message.text()}]
        else:
            role = message.role
            blocks = _content_blocks(message)
            if role == "assistant":
                blocks += _tool_use_blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants user/assistant alternating
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # plain text stays a plain string, as Anthropic's own examples send it
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    return ("\n\n".join(system) if system else None), turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        function = tool.get("function") or {}
        entry = {"name": function.get("name"),
                 "input_schema": function.get("parameters") or {"type": "object"}}
        if function.get("description"):
            entry["description"] = function["description"]
        converted.append(entry)
    return converted


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    return {"type": CHOICE_TYPES.get(choice, "auto")}


def _clamp(value: float, bounds: tuple[float, float] | None) -> float:
    return value if bounds is None else min(bounds[1], max(bounds[0], value))


def chat_request(request: ChatCompletionRequest, model: str, *, default_max_tokens: int,
                 ranges: dict[str, tuple[float, float]], stream: bool) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request."""
    if request.n not in (None, 1):
        raise _unsupported("n > 1", "n")
    if request.response_format is not None and request.response_format.type != "text":
        raise _unsupported(f"response_format '{request.response_format.type}'",
                           "response_format")
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {"model": model, "messages": turns,
                            "max_tokens": request.output_limit() or default_max_tokens}
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = _clamp(request.temperature, ranges.get("temperature"))
    if request.top_p is not None:
        body["top_p"] = _clamp(request.top_p, ranges.get("top_p"))
    if request.stop_list():
        body["stop_sequences"] = request.stop_list()
    if request.tools:
        body["tools"] = _tools(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
        if (request.model_extra or {}).get("parallel_tool_calls") is False:
            body["tool_choice"]["disable_parallel_tool_use"] = True
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def _usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt = sum(int(usage.get(k) or 0) for k in
                 ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return usage_dict(prompt, int(usage.get("output_tokens") or 0))


def chat_response(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat.completion from a Messages API answer."""
    texts, calls = [], []
    for block in payload.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block))
    return chat_completion(
        id=str(payload.get("id") or ""), model=model,
        text="".join(texts) if texts or not calls else None,
        finish_reason=STOP_REASONS.get(payload.get("stop_reason") or "", "stop"),
        usage=_usage(payload.get("usage")), tool_calls=calls or None,
    )


def error_from_status(status: int, body: bytes) -> ModelportError:
    error = normalize_upstream_error(status, body)
    if status == 529:
        return UpstreamError(error.message, status=503, type="overloaded_error")
    if status == 413:
        return PayloadTooLargeError(error.message)
    return error


def error_from_event(event: dict[str, Any]) -> ModelportError:
    detail = event.get("error") if isinstance(event.get("error"), dict) else {}
    kind = str(detail.get("type") or "api_error")
    message = str(detail.get("message") or kind)
    status = ERROR_STATUS.get(kind, 502)
    if status == 400:
        return InvalidRequestError(message)
    return UpstreamError(message, status=status, type=kind)


def event_data(event: bytes) -> dict[str, Any] | None:
    """The JSON of one SSE event (`event: x` line, then `data: {...}`)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


class StreamTranslator:
    """Messages API stream events -> OpenAI chat.completion.chunk dicts, one stream each."""

    def __init__(self, model: str) -> None:
        self.writer = ChunkWriter(model)
        self.finished = False
        self._tool_index: dict[int, int] = {}
        self._usage: dict[str, Any] = {}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self.writer.id = str(message["id"])
            self._usage.update(message.get("usage") or {})
            return [self.writer.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "message_delta":
            self._usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self.writer.chunk({}, STOP_REASONS.get(reason or "", "stop"))]
        if kind == "message_stop":
            self.finished = True
            usage = _usage(self._usage)
            return [self.writer.usage_chunk(usage)] if usage else []
        if kind == "error":
            raise error_from_event(event)
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "tool_use":
            position = self._tool_index[index] = len(self._tool_index)
            return [self.writer.chunk({"tool_calls": [{
                "index": position, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}]})]
        if block.get("type") == "text" and block.get("text"):
            return [self.writer.chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if delta.get("type") == "text_delta":
            return [self.writer.chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "input_json_delta" and index in self._tool_index:
            return [self.writer.chunk({"tool_calls": [{
                "index": self._tool_index[index],
                "function": {"arguments": delta.get("partial_json", "")}}]})]
        return []  # thinking and signature deltas have no OpenAI chat equivalent
