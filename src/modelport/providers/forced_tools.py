"""`tool_choice: required` or a named function on llama.cpp workers, guaranteed.

llama.cpp honours `required` with a grammar that still lets the model write text before
the call, so a small model talks until max_tokens and never calls. Here the request is
sent with the tools (the template still shows them to the model) but `tool_choice:
none` and a grammar of our own that allows nothing but one call in the template's own
format, then the stream's content is turned back into tool-call deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelport.sse import DONE_MARKERS
from modelport.protocol import ChatCompletionRequest, OpenAIRequest
from modelport.tools.calls import Content, ToolCallStream, delta_of
from modelport.tools.support import HERMES, JSON


def forced_function_names(request: OpenAIRequest) -> list[str] | None:
    """The functions one of which the answer must call, or None when it need not call."""
    if not isinstance(request, ChatCompletionRequest) or not request.tools:
        return None
    choice = request.tool_choice
    if isinstance(choice, dict):
        return [choice["function"]["name"]]
    if choice == "required":
        return [tool["function"]["name"] for tool in request.tools]
    return None


def forced_body(body: dict[str, Any], names: list[str], tool_format: str) -> dict[str, Any]:
    """`body` asking llama.cpp for exactly one call of one of `names`."""
    tools = {tool["function"]["name"]: tool["function"] for tool in body["tools"]}
    arguments_key = "parameters" if tool_format == JSON else "arguments"
    calls = [{
        "type": "object",
        "properties": {"name": {"const": name},
                       arguments_key: _closed(tools[name].get("parameters"))},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    } for name in names]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    # llguidance's grammar syntax (what xllamacpp's json_schema_to_grammar emits too):
    # %json embeds a JSON schema, which llama.cpp turns into the constraint itself.
    if tool_format == HERMES:
        start = 'start: "<tool_call>\\n" call "\\n</tool_call>"\n'
    else:
        start = "start: call\n"
    grammar = "%llguidance {}\n" + start + "call: %json " + orjson.dumps(schema).decode() + "\n"
    forced = {**body, "tool_choice": "none", "grammar": grammar}
    forced.pop("parallel_tool_calls", None)
    return forced


def _closed(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters' schema without room for keys it does not name: JSON Schema allows
    any other key by default, and a small model fills that room with its own inventions."""
    if not parameters:
        return {"type": "object", "additionalProperties": False, "properties": {}}
    if parameters.get("type") == "object" and parameters.get("properties") is not None \
            and "additionalProperties" not in parameters:
        return {**parameters, "additionalProperties": False}
    return parameters


async def as_tool_calls(events: AsyncIterator[bytes], names: list[str]) -> AsyncIterator[bytes]:
    """The worker's stream with its content turned into tool-call deltas (one reader per
    choice: with `n` > 1 their chunks interleave)."""
    parsers: dict[int, ToolCallStream] = {}
    async for event in events:
        if event.startswith(DONE_MARKERS) or b"data:" not in event:
            yield event
            continue
        try:
            chunk = orjson.loads(event[event.index(b"data:") + 5:])
        except orjson.JSONDecodeError:
            yield event  # not ours to judge; the relay reports malformed streams
            continue
        if not isinstance(chunk, dict) or not chunk.get("choices"):
            yield event  # usage, errors, `data: null`
            continue
        for choice in chunk["choices"]:
            parser = parsers.setdefault(choice.get("index", 0), ToolCallStream(frozenset(names)))
            for rewritten in _rewrite(chunk, choice, parser):
                yield b"data: " + orjson.dumps(rewritten) + b"\n\n"


def _rewrite(chunk: dict[str, Any], choice: dict[str, Any],
             parser: ToolCallStream) -> list[dict[str, Any]]:
    delta = dict(choice.get("delta") or {})
    finish = choice.get("finish_reason")
    text = delta.pop("content", None)
    events = parser.push(text) if isinstance(text, str) else []
    if finish:
        events += parser.finish()
    out: list[dict[str, Any]] = []
    if delta:
        out.append(_with_choice(chunk, choice, delta, None))
    for event in events:
        if isinstance(event, Content):
            part: dict[str, Any] = {"content": event.text}
        else:
            part = {"tool_calls": [delta_of(event)]}
        out.append(_with_choice(chunk, choice, part, None))
    if finish:
        reason = "tool_calls" if parser.calls and finish == "stop" else finish
        out.append(_with_choice(chunk, choice, {}, reason))
    return out


def _with_choice(chunk: dict[str, Any], choice: dict[str, Any], delta: dict[str, Any],
                 finish: str | None) -> dict[str, Any]:
    return {**chunk, "choices": [{**choice, "delta": delta, "finish_reason": finish}]}
