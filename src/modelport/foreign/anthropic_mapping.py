"""The tables and converters both directions of the Anthropic Messages translation share:
stop reasons, error types, tool_choice modes, tool calls and usage, each way.

`anthropic_upstream` serves OpenAI clients from an Anthropic vendor; `anthropic_downstream`
and `anthropic_events` serve Anthropic clients of /v1/messages from any chat engine.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

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


# OpenAI's tool_choice modes and Anthropic's, each way.
CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none"}
CHOICE_MODES = {kind: mode for mode, kind in CHOICE_TYPES.items()}


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


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage as Anthropic's (the inverse of the upstream `_usage`)."""
    usage = usage if isinstance(usage, dict) else {}
    return {"input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0)}
