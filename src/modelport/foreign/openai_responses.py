"""OpenAI Responses API <-> OpenAI chat completions, as pure transforms (dicts in, dicts out).

A Responses request becomes a chat.completions body (`chat_body`); the chat answer becomes a
`response` object (`response_from_chat`); a chat chunk stream becomes the Responses event
stream (`ResponseEvents`). Conversation state is items: what came before
(`previous_response_id`) is handed in as items, and `conversation_items` says what a response
adds, so whoever keeps responses stores items and nothing chat-shaped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from modelport.errors import InvalidRequestError, ModelportError
from modelport.foreign.openai_responses_schema import ResponsesRequest

# Chat finish reasons that end a response early -> its incomplete_details.reason.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The response.error codes the SDK knows, by the HTTP status of the failure.
_FAILURE_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------- request -> chat body


def input_items(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as items (a plain string is one user message)."""
    if isinstance(request.input, str):
        return [{"type": "message", "role": "user", "content": request.input}]
    return [dict(item) for item in request.input]


def _text_parts(content: list[dict[str, Any]]) -> list[str] | None:
    texts = []
    for part in content:
        if part["type"] in ("input_text", "output_text"):
            texts.append(part["text"])
        elif part["type"] == "refusal":
            texts.append(part["refusal"])
        else:
            return None
    return texts


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {"file_data": part["file_data"]}
        if part.get("filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return {"type": "text", "text": part.get("text", part.get("refusal", ""))}


def _message_content(role: str, content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    texts = _text_parts(content)
    if texts is not None and (role == "assistant" or len(texts) <= 1):
        return "".join(texts)  # the model's own turn reads back as one text, as output_text does
    return [_chat_part(part) for part in content]


def _tool_output(output: str | list[dict[str, Any]], param: str) -> str:
    if isinstance(output, str):
        return output
    texts = _text_parts(output)
    if texts is None:
        raise InvalidRequestError("a function_call_output can carry only text here",
                                  param=f"{param}.output")
    return "".join(texts)


def chat_messages(items: list[dict[str, Any]], instructions: str | None = None, *,
                  first_param_index: int = 0) -> list[dict[str, Any]]:
    """Items -> chat messages. Consecutive function calls (and the assistant text before
    them) become one assistant message with `tool_calls`, as a chat model produced them.
    `first_param_index` is the request's `input` index of items[0] when earlier items came
    from a previous response (so errors name the client's own `input[i]`)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    calls: set[str] = set()
    for position, item in enumerate(items):
        param = f"input[{position - first_param_index}]"
        kind = item.get("type", "message")
        if kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            calls.add(item["call_id"])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "tool_calls": [call]})
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                raise InvalidRequestError(
                    f"no function_call with call_id '{item['call_id']}' comes before this "
                    "function_call_output", param=f"{param}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _tool_output(item["output"], param)})
        else:
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _message_content(role, item["content"])})
    if not any(message["role"] != "system" for message in messages):
        raise InvalidRequestError("the input has no user, assistant or tool turn to answer",
                                  param="input")
    return messages


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _response_format(text_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not text_format or text_format["type"] == "text":
        return None
    if text_format["type"] == "json_object":
        return {"type": "json_object"}
    schema = {"name": text_format["name"], "schema": text_format["schema"]}
    for key in ("description", "strict"):
        if text_format.get(key) is not None:
            schema[key] = text_format[key]
    return {"type": "json_schema", "json_schema": schema}


def chat_body(request: ResponsesRequest, history: list[dict[str, Any]] | None = None,
              *, model: str | None = None) -> dict[str, Any]:
    """The chat.completions body that answers `request`, after `history` (the items of the
    responses it continues)."""
    history = history or []
    body: dict[str, Any] = {
        "model": model or request.model,
        "messages": chat_messages(history + input_items(request), request.instructions,
                                  first_param_index=len(history)),
    }
    if request.tools:
        body["tools"] = [_chat_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = choice if isinstance(choice, str) else {
            "type": "function", "function": {"name": choice["name"]}}
    for source, target in (("parallel_tool_calls", "parallel_tool_calls"),
                           ("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                           ("top_p", "top_p"), ("user", "user")):
        value = getattr(request, source)
        if value is not None:
            body[target] = value
    response_format = _response_format(request.text_format())
    if response_format is not None:
        body["response_format"] = response_format
    if request.stream:
        body["stream"] = True
    return body


# ---------------------------------------------------------------- chat answer -> response


def response_shell(request: ResponsesRequest, *, model: str, response_id: str | None = None,
                   created_at: int | None = None) -> dict[str, Any]:
    """The response object's fields that echo the request (everything but the outcome)."""
    return {
        "id": response_id or new_id("resp"),
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store is not False,
        "temperature": request.temperature,
        "text": {"format": dict(request.text_format() or {"type": "text"})},
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": [dict(tool) for tool in request.tools or ()],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": dict(request.metadata or {}),
    }


def usage_from_chat(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _outcome(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(text: str, status: str) -> dict[str, Any]:
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [_text_part(text)]}


def _call_item(call_id: str | None, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": new_id("fc"), "type": "function_call", "status": status,
            "call_id": call_id or new_id("call"), "name": name, "arguments": arguments}


def response_from_chat(shell: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion answer as the finished response object."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    status, incomplete = _outcome(choice.get("finish_reason"))
    calls = message.get("tool_calls") or []
    output = []
    text = message.get("content")
    if text or (not calls and not message.get("refusal")):
        output.append(_message_item(text or "", status))
    if message.get("refusal"):
        output.append({**_message_item("", status), "content": [
            {"type": "refusal", "refusal": message["refusal"]}]})
    for call in calls:
        function = call.get("function") or {}
        output.append(_call_item(call.get("id"), function.get("name") or "",
                                 function.get("arguments") or "", "completed"))
    return {**shell, "status": status, "incomplete_details": incomplete,
            "model": completion.get("model") or shell["model"], "output": output,
            "usage": usage_from_chat(completion.get("usage"))}


def conversation_items(items: list[dict[str, Any]], response: dict[str, Any]) -> list[dict[str, Any]]:
    """What a later `previous_response_id` continues from: the items that led to `response`
    (earlier turns and this request's input, not its instructions) and its output."""
    return items + list(response["output"])


# ---------------------------------------------------------------- chat chunks -> events


def sse_frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """An item as it is now: events keep their own copy while the item grows."""
    copied = dict(item)
    if "content" in copied:
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied


class ResponseEvents:
    """chat.completion.chunk dicts in -> Responses stream events out, for one response.

    `start()` once, `feed(chunk)` per chunk, then `finish()` when the chunks ended, or
    `fail(error)` when they broke off; each returns the events to send, numbered in order.
    """

    def __init__(self, shell: dict[str, Any]) -> None:
        self.shell = shell
        self.output: list[dict[str, Any]] = []
        self.response: dict[str, Any] | None = None  # the final one, once finished
        self._sequence = 0
        self._text_at: int | None = None  # output index of the message being written
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._open: list[int] = []
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        return {**self.shell, "status": status, "output": [_copy(item) for item in self.output],
                **fields}

    def start(self) -> list[dict[str, Any]]:
        snapshot = self._snapshot("in_progress")
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a response has one answer; n > 1 is never asked for
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.output.append(item)
        self._open.append(len(self.output) - 1)
        return [self._event("response.output_item.added", output_index=len(self.output) - 1,
                            item=_copy(item))]

    def _open_message(self) -> list[dict[str, Any]]:
        item = {**_message_item("", "in_progress"), "content": []}
        events = self._add(item)
        self._text_at = len(self.output) - 1
        item["content"].append(_text_part(""))
        events.append(self._event("response.content_part.added", item_id=item["id"],
                                  output_index=self._text_at, content_index=0,
                                  part=_text_part("")))
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = self._open_message() if self._text_at is None else []
        item = self.output[self._text_at]
        item["content"][0]["text"] += text
        events.append(self._event("response.output_text.delta", item_id=item["id"],
                                  output_index=self._text_at, content_index=0, delta=text,
                                  logprobs=[]))
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        function = call.get("function") or {}
        index = call.get("index", 0)
        if index not in self._calls:
            if self._text_at is not None:
                events += self._close(self._text_at, "completed")
            events += self._add(_call_item(call.get("id"), function.get("name") or "", "",
                                           "in_progress"))
            self._calls[index] = len(self.output) - 1
        at = self._calls[index]
        item = self.output[at]
        if function.get("name") and function["name"] != item["name"] and not item["arguments"]:
            item["name"] = function["name"]  # an engine that sent the name after the id
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item["id"], output_index=at,
                                      delta=function["arguments"]))
        return events

    def _close(self, at: int, status: str) -> list[dict[str, Any]]:
        item = self.output[at]
        self._open.remove(at)
        events = []
        if item["type"] == "message":
            self._text_at = None
            part = item["content"][0]
            events.append(self._event("response.output_text.done", item_id=item["id"],
                                      output_index=at, content_index=0, text=part["text"],
                                      logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=item["id"],
                                      output_index=at, content_index=0, part=dict(part)))
        else:
            events.append(self._event("response.function_call_arguments.done",
                                      item_id=item["id"], output_index=at,
                                      arguments=item["arguments"]))
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=at,
                                  item=_copy(item)))
        return events

    def finish(self) -> list[dict[str, Any]]:
        status, incomplete = _outcome(self._finish_reason)
        events = []
        if not self.output:  # an answer without any text still has its (empty) message
            events += self._open_message()
        for at in list(self._open):
            cut = status == "incomplete" and self.output[at]["type"] == "message"
            events += self._close(at, "incomplete" if cut else "completed")
        self.response = self._snapshot(status, incomplete_details=incomplete,
                                       usage=usage_from_chat(self._usage))
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, error: ModelportError) -> list[dict[str, Any]]:
        """The events that end a stream which broke off with `error`."""
        code = _FAILURE_CODES.get(error.status, "server_error")
        self.response = self._snapshot("failed", error={"code": code, "message": error.message},
                                       usage=usage_from_chat(self._usage))
        return [self._event("error", code=error.code or code, message=error.message,
                            param=error.param),
                self._event("response.failed", response=self.response)]
