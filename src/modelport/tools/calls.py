"""Tool calls in a model's generated text, found while it streams.

Two written forms are understood:
- Hermes/Qwen: `<tool_call>{"name": "f", "arguments": {...}}</tool_call>`, any number of
  them, possibly after some text;
- Llama 3: the whole answer is one JSON object `{"name": "f", "parameters": {...}}`
  (or `"arguments"`).

`ToolCallStream` turns text pieces into content pieces and tool-call events in the order
OpenAI streams them: a call's id and name first, then fragments of its arguments. Pure
logic, no engine import: the transformers worker and the gateway (for llama.cpp output
forced into a tool call) share it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Union

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_HEAD = re.compile(
    r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
# Once this much text follows <tool_call> without a recognisable head, stop waiting for it
# and read the block whole at its end.
_HEAD_PATIENCE = 400


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    index: int
    text: str


ToolEvent = Union[Content, CallStart, CallArguments]


class JsonValueEnd:
    """Follows a JSON value character by character and says where it ends (objects, arrays
    and strings; enough to know when a call's arguments are complete)."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False
        self.done = False

    def feed(self, text: str) -> int | None:
        """Index in `text` just past the value's end, or None if it goes on."""
        for position, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return self._end(position)
                continue
            if char.isspace() and not self.started:
                continue
            self.started = True
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return self._end(position)
        return None

    def _end(self, position: int) -> int:
        self.done = True
        return position + 1


class ToolCallStream:
    """Feed generated text with `push`, then call `finish`; both return events."""

    def __init__(self, names: frozenset[str] | None = None) -> None:
        self._names = names  # the offered tools; a call of another name stays content
        self._buffer = ""
        self._state = "content"
        self._index = -1
        self._arguments: JsonValueEnd | None = None
        self._answer_started = False
        self._answer_end: JsonValueEnd | None = None
        self._answer_fed = 0
        self.calls = 0

    @property
    def call_complete(self) -> bool:
        """A call was read to the end of its arguments (and none is open now)."""
        return self.calls > 0 and self._state not in ("head", "arguments")

    # -- streaming -----------------------------------------------------------------------
    def push(self, text: str) -> list[ToolEvent]:
        self._buffer += text
        events: list[ToolEvent] = []
        while True:
            before = (self._state, len(self._buffer))
            events += getattr(self, f"_in_{self._state}")()
            if (self._state, len(self._buffer)) == before:
                return events

    def finish(self) -> list[ToolEvent]:
        events = self.push("")
        rest, self._buffer = self._buffer, ""
        if self._state == "json_answer":
            events += self._whole_json_answer(rest)
        elif self._state == "head":
            events += self._whole_block(rest)
        elif self._state == "arguments" and rest:
            events.append(CallArguments(self._index, rest))
        elif self._state == "content" and rest and (rest.strip() or not self.calls):
            events.append(Content(rest))
        self._state = "content"
        return events

    def _in_content(self) -> list[ToolEvent]:
        if not self._answer_started:
            stripped = self._buffer.lstrip()
            if not stripped:
                return []
            self._answer_started = True
            if stripped.startswith("{") and self._names is not None:
                self._state = "json_answer"  # maybe a Llama 3 call: known once it closes
                return []
        found = self._buffer.find(CALL_OPEN)
        if found >= 0:
            text, self._buffer = self._buffer[:found], self._buffer[found + len(CALL_OPEN):]
            self._state = "head"
            return [Content(text)] if text.strip() else []
        keep = _partial_suffix(self._buffer, CALL_OPEN)
        text = self._buffer[:len(self._buffer) - keep]
        if not text.strip():
            return []  # whitespace waits: between or after calls it is dropped
        self._buffer = self._buffer[len(text):]
        return [Content(text)]

    def _in_json_answer(self) -> list[ToolEvent]:
        """A Llama 3 call is one JSON object: read once it is complete, then the rest
        (if the model goes on) is content."""
        if self._answer_end is None:
            self._answer_end = JsonValueEnd()
        end = self._answer_end.feed(self._buffer[self._answer_fed:])
        if end is None:
            self._answer_fed = len(self._buffer)
            return []
        end += self._answer_fed
        answer, self._buffer = self._buffer[:end], self._buffer[end:]
        events = self._whole_json_answer(answer)
        self._state = "after_call" if self.calls else "content"
        return events

    def _in_head(self) -> list[ToolEvent]:
        match = _HEAD.match(self._buffer)
        if match and self._known(_unescape(match.group(1))):
            self._buffer = self._buffer[match.end():]
            self._state = "arguments"
            return [self._open_call(_unescape(match.group(1)))]
        closed = self._buffer.find(CALL_CLOSE)
        if closed >= 0 or len(self._buffer) > _HEAD_PATIENCE:
            end = closed if closed >= 0 else len(self._buffer)
            block = self._buffer[:end]
            self._buffer = self._buffer[end + len(CALL_CLOSE):] if closed >= 0 else ""
            self._state = "content"
            return self._whole_block(block)
        return []

    def _in_arguments(self) -> list[ToolEvent]:
        assert self._arguments is not None
        if not self._arguments.started:
            self._buffer = self._buffer.lstrip()
        end = self._arguments.feed(self._buffer)
        if end is None:
            text, self._buffer = self._buffer, ""
            return [CallArguments(self._index, text)] if text else []
        text, self._buffer = self._buffer[:end], self._buffer[end:]
        self._state = "after_call"
        return [CallArguments(self._index, text)] if text else []

    def _in_after_call(self) -> list[ToolEvent]:
        """Skip the call's closing `}` and `</tool_call>`; what follows may be another call."""
        rest = self._buffer.lstrip()
        if rest.startswith("}"):
            rest = rest[1:].lstrip()
        if rest.startswith(CALL_CLOSE):
            self._buffer = rest[len(CALL_CLOSE):]
            self._state = "content"
        elif rest and not CALL_CLOSE.startswith(rest):
            self._buffer = rest  # no closing tag: what follows is read as content
            self._state = "content"
        return []

    # -- helpers -------------------------------------------------------------------------
    def _known(self, name: str) -> bool:
        return self._names is None or name in self._names

    def _open_call(self, name: str) -> CallStart:
        self._index += 1
        self.calls += 1
        self._arguments = JsonValueEnd()
        return CallStart(self._index, call_id(), name)

    def _whole_block(self, block: str) -> list[ToolEvent]:
        parsed = _call_object(block)
        if parsed is None or not self._known(parsed[0]):
            return [Content(CALL_OPEN + block)]
        start = self._open_call(parsed[0])
        return [start, CallArguments(start.index, parsed[1])]

    def _whole_json_answer(self, text: str) -> list[ToolEvent]:
        parsed = _call_object(text.strip().removeprefix("<|python_tag|>"))
        if parsed is None or not self._known(parsed[0]):
            return [Content(text)] if text else []
        start = self._open_call(parsed[0])
        return [start, CallArguments(start.index, parsed[1])]


def _call_object(text: str) -> tuple[str, str] | None:
    """(name, arguments JSON) of a `{"name": ..., "arguments"|"parameters": ...}` object."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments: Any = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        return value["name"], arguments
    return value["name"], json.dumps(arguments, ensure_ascii=False)


def _unescape(name: str) -> str:
    try:
        return json.loads(f'"{name}"')
    except ValueError:
        return name


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that begins `marker` (held back until it is
    clear whether the marker follows)."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


def collect(events: list[ToolEvent]) -> tuple[str, list[dict[str, Any]]]:
    """The content and the OpenAI `tool_calls` list that a sequence of events spells."""
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, Content):
            content.append(event.text)
        elif isinstance(event, CallStart):
            calls.append({"id": event.id, "type": "function",
                          "function": {"name": event.name, "arguments": ""}})
        else:
            calls[event.index]["function"]["arguments"] += event.text
    return "".join(content), calls


def delta_of(event: CallStart | CallArguments) -> dict[str, Any]:
    """An OpenAI stream delta's `tool_calls` entry for one event."""
    if isinstance(event, CallStart):
        return {"index": event.index, "id": event.id, "type": "function",
                "function": {"name": event.name, "arguments": ""}}
    return {"index": event.index, "function": {"arguments": event.text}}
