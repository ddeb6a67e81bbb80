"""An Anthropic client of /v1/messages, served by any chat engine: its requests as OpenAI
chat bodies, the engine's answers as Anthropic messages, our errors in Anthropic's envelope.
Streams are translated by `anthropic_events`.
"""

from __future__ import annotations

import uuid
from typing import Any

from modelport.errors import InvalidRequestError, MalformedUpstreamError, ModelportError
from modelport.foreign.anthropic_mapping import (
    CHOICE_MODES,
    ERROR_TYPES,
    FINISH_REASONS,
    anthropic_usage,
    tool_call,
    tool_use_block,
)
from modelport.foreign.anthropic_schema import CountTokensRequest, MessagesRequest


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


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


def function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic tool definitions as OpenAI function tools (the inverse of the upstream `_tools`)."""
    converted = []
    for tool in tools:
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or
                    {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def openai_tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    """An Anthropic tool_choice as OpenAI's (the inverse of the upstream `_tool_choice`)."""
    if choice["type"] == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return CHOICE_MODES[choice["type"]]


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


def stop_reason(finish_reason: str | None, matcher: StopMatcher, has_calls: bool) -> str:
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
        "stop_reason": stop_reason(choices[0].get("finish_reason"), matcher, bool(calls)),
        "stop_sequence": matcher.matched,
        "usage": anthropic_usage(payload.get("usage")),
    }


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(error: ModelportError) -> dict[str, Any]:
    """Anthropic's error envelope for any of our errors (the status stays ours)."""
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}
