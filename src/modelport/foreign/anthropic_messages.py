"""Anthropic Messages API <-> OpenAI chat completions, as pure transforms, both ways.

Upstream (an Anthropic vendor behind an OpenAI client): system/developer messages become
`system`, content parts and tool calls become content blocks, tool results become user
`tool_result` blocks; answers, stream events, stop reasons, usage and errors come back in
the shapes OpenAI clients expect.

Downstream (an Anthropic client of /v1/messages, served by any chat engine): the same
mappings the other way round, through the same tables and block converters.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from modelport.errors import (
    InvalidRequestError,
    MalformedUpstreamError,
    ModelportError,
    PayloadTooLargeError,
    UpstreamError,
    normalize_upstream_error,
)
from modelport.foreign.anthropic_schema import CountTokensRequest, MessagesRequest
from modelport.protocol import ChatCompletionRequest, ChatMessage
from modelport.providers.openai_shapes import ChunkWriter, chat_completion, usage_dict

PATH = "/messages"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The other way: what an Anthropic client is told of an OpenAI finish_reason.
FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic error types -> the status OpenAI clients act on (529 "overloaded" is a 503).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
}
# The other way: the error type an Anthropic client is shown for one of our statuses.
ERROR_TYPES = {status: kind for kind, status in ERROR_STATUS.items()}


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


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


def tool_use_block(call: dict[str, Any]) -> dict[str, Any] | None:
    """An OpenAI tool call as a `tool_use` block; None when its arguments are not a JSON
    object (Anthropic's `input` must be one)."""
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {"type": "tool_use", "id": call.get("id") or tool_use_id(),
            "name": function.get("name"), "input": arguments}


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """A `tool_use` block as an OpenAI tool call."""
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"),
                         "arguments": orjson.dumps(block.get("input", {})).decode()}}


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


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


def function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic tool definitions as OpenAI function tools (the inverse of `_tools`)."""
    converted = []
    for tool in tools:
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or
                    {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


# OpenAI's tool_choice modes and Anthropic's, each way.
_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none"}
_CHOICE_MODES = {kind: mode for mode, kind in _CHOICE_TYPES.items()}


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    return {"type": _CHOICE_TYPES.get(choice, "auto")}


def openai_tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    """An Anthropic tool_choice as OpenAI's (the inverse of `_tool_choice`)."""
    if choice["type"] == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return _CHOICE_MODES[choice["type"]]


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


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage as Anthropic's (the inverse of `_usage`)."""
    usage = usage if isinstance(usage, dict) else {}
    return {"input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0)}


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


# ---- Downstream: an Anthropic client of /v1/messages, served by a chat engine ----------


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _tool_result_text(block: dict[str, Any], param: str) -> str:
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        if any(part["type"] != "text" for part in content):
            raise InvalidRequestError("images inside a tool_result cannot be passed to a chat "
                                      "model; send them in a user content block",
                                      param=f"{param}.content")
        text = "".join(part["text"] for part in content)
    # OpenAI's tool message has no error flag; the model still has to learn the call failed.
    return f"Error: {text}" if block.get("is_error") else text


def _user_messages(blocks: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first (OpenAI wants them right after the assistant's
    tool calls), then whatever the user said beside them."""
    results, parts = [], []
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "tool_result":
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": _tool_result_text(block, f"{param}[{index}]")})
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block))
        else:
            raise InvalidRequestError(f"a user message cannot carry a '{kind}' block",
                                      param=f"{param}[{index}].type")
    if not parts and not results:
        raise InvalidRequestError("a user message needs at least one content block",
                                  param=param)
    if parts and all(part["type"] == "text" for part in parts):
        return results + [{"role": "user", "content": "".join(p["text"] for p in parts)}]
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_message(blocks: list[dict[str, Any]], param: str) -> dict[str, Any]:
    texts, calls = [], []
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(tool_call(block))
        elif kind not in ("thinking", "redacted_thinking"):  # no engine here can take them back
            raise InvalidRequestError(f"an assistant message cannot carry a '{kind}' block",
                                      param=f"{param}[{index}].type")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


def chat_prompt(request: CountTokensRequest) -> dict[str, Any]:
    """The prompt half of an OpenAI chat body (model, messages, tools, tool_choice)."""
    messages: list[dict[str, Any]] = []
    system = request.system_text()
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        param = f"messages[{index}].content"
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
        elif message.role == "user":
            messages.extend(_user_messages(message.content, param))  # type: ignore[arg-type]
        else:
            messages.append(_assistant_message(message.content, param))  # type: ignore[arg-type]
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = function_tools(request.tools)  # type: ignore[arg-type]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = openai_tool_choice(choice)  # type: ignore[arg-type]
        if choice.get("disable_parallel_tool_use"):
            body["parallel_tool_calls"] = False
    return body


def chat_body(request: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat.completions body for a Messages API request.

    `stop_sequences` stay out of it: an engine that stops at one drops it from the text and
    reports only "stop", so the gateway matches them itself (`StopMatcher`) to tell the
    client which one ended the turn."""
    body = chat_prompt(request)
    body["max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    output_format = (request.output_config or {}).get("format")
    if output_format:  # structured output: the engine's constrained decoding
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": output_format["schema"]}}
    if request.stream:
        body["stream"] = True
    return body


class StopMatcher:
    """Finds the first of the client's stop sequences in generated text as it arrives.

    `feed` returns the text that is safe to show: everything before a match, and nothing
    that could still turn out to be the start of a stop sequence (held back until the next
    piece decides it)."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [stop for stop in stops or () if stop]
        self.matched: str | None = None
        self._held = ""

    def feed(self, text: str) -> str:
        if not self.stops or self.matched is not None:
            return text if self.matched is None else ""
        held = self._held + text
        found = [(held.find(stop), stop) for stop in self.stops if stop in held]
        if found:
            position, self.matched = min(found)
            self._held = ""
            return held[:position]
        keep = max((k for stop in self.stops for k in range(1, min(len(stop), len(held) + 1))
                    if held.endswith(stop[:k])), default=0)
        self._held = held[len(held) - keep:]
        return held[:len(held) - keep]

    def flush(self) -> str:
        """The held-back text, once no more text will come."""
        held, self._held = self._held, ""
        return held


def _stop_reason(finish_reason: str | None, matcher: StopMatcher, has_calls: bool) -> str:
    if matcher.matched is not None:
        return "stop_sequence"
    if has_calls:  # some engines say "stop" after a tool call
        return "tool_use"
    return FINISH_REASONS.get(finish_reason or "", "end_turn")


def _checked_tool_use(call: dict[str, Any], label: str) -> dict[str, Any]:
    block = tool_use_block(call)
    if block is None:
        raise MalformedUpstreamError(f"{label}: the model's tool call arguments are not a JSON "
                                     "object")
    return block


def message_from_chat(payload: dict[str, Any], stop_sequences: list[str] | None) -> dict[str, Any]:
    """An Anthropic `message` from an OpenAI chat.completion (model = the served name)."""
    choices = payload.get("choices") or [{}]
    message = choices[0].get("message") or {}
    matcher = StopMatcher(stop_sequences)
    text = matcher.feed(message.get("content") or "")
    text += matcher.flush() if matcher.matched is None else ""
    label = str(payload.get("model", ""))
    calls = [] if matcher.matched else [_checked_tool_use(call, label)
                                        for call in message.get("tool_calls") or []]
    content = ([{"type": "text", "text": text}] if text else []) + calls
    return {
        "id": message_id(), "type": "message", "role": "assistant",
        "model": payload.get("model"), "content": content,
        "stop_reason": _stop_reason(choices[0].get("finish_reason"), matcher, bool(calls)),
        "stop_sequence": matcher.matched,
        "usage": anthropic_usage(payload.get("usage")),
    }


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(error: ModelportError) -> dict[str, Any]:
    """Anthropic's error envelope for any of our errors (the status stays ours)."""
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


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
        reason = _stop_reason(self._finish_reason, self.matcher, bool(self._tool_blocks))
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
