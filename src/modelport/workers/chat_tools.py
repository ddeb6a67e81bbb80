"""Tool calling for the transformers worker: what a request with `tools` asks of a
generation, and the conversation as the chat template expects it.

- The tools go to the template (`apply_chat_template(tools=...)`); a template that does
  not render them is a 400 naming the model, never an answer that ignores them.
- `tool_choice: required` or a named function is constrained decoding: the answer is
  opened with the template's call marker (`<tool_call>\\n{"name": "`), and the next tokens
  may only spell one of the allowed names (`ForcedOpening`, engines/transformers_sampling.py);
  the model then writes the arguments, and the generation ends once they are complete.
- The output is read by `ToolCallStream` (Hermes `<tool_call>` blocks, Llama 3 JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidRequestError
from modelport.protocol import ChatCompletionRequest, ChatMessage
from modelport.tools.calls import CALL_OPEN, ToolCallStream
from modelport.tools.support import HERMES, ToolSupport


@dataclass(frozen=True)
class ToolPlan:
    names: frozenset[str]
    tools: list[dict[str, Any]]
    forced: tuple[str, ...] = ()   # names one of which must be called, or () when free
    opening: str = ""              # text the answer is forced to start with
    arguments_key: str = "arguments"
    one_call: bool = False         # the answer ends with its first complete call

    def parser(self) -> ToolCallStream:
        parser = ToolCallStream(self.names)
        if self.opening:
            parser.push(self.opening)  # the forced opening is part of the answer
        return parser


def plan_tools(body: ChatCompletionRequest, model: str, support: ToolSupport) -> ToolPlan | None:
    """What the request's tools ask of the generation; None when it offers none to call."""
    if not body.tools or body.tool_choice == "none":
        return None
    if not support.can_call_tools:
        raise InvalidRequestError(f"model '{model}' cannot call tools: {support.reason}",
                                  param="tools", code="tools_unsupported")
    tools = [dict(tool) for tool in body.tools]
    names = frozenset(tool["function"]["name"] for tool in body.tools)
    choice = body.tool_choice
    if isinstance(choice, dict):
        forced: tuple[str, ...] = (choice["function"]["name"],)
    elif choice == "required":
        forced = tuple(tool["function"]["name"] for tool in body.tools)
    else:
        # OpenAI's parallel_tool_calls (true by default) is an unvalidated extra field here.
        return ToolPlan(names, tools, one_call=getattr(body, "parallel_tool_calls", None) is False)
    hermes = support.format == HERMES
    opening = (CALL_OPEN + "\n" if hermes else "") + '{"name": "'
    return ToolPlan(names, tools, forced, opening=opening,
                    arguments_key="arguments" if hermes else "parameters", one_call=True)


def forced_continuations(plan: ToolPlan) -> list[str]:
    """Each allowed way to go on from the opening: a name, the arguments key, and the
    arguments' first key (a small model left free there tends to copy the schema)."""
    parameters = {tool["function"]["name"]: tool["function"].get("parameters") or {}
                  for tool in plan.tools}
    continuations = []
    for name in plan.forced:
        start = json.dumps(name)[1:] + f', "{plan.arguments_key}": '
        continuations.append(start + _first_argument(parameters.get(name) or {}))
    return continuations


def _first_argument(schema: dict[str, Any]) -> str:
    """`{"key": ` for the first required (else first) argument, with the opening quote of
    its value when that is a string; "" when the schema names no argument."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return ""
    required = [key for key in schema.get("required") or () if key in properties]
    key = required[0] if required else next(iter(properties))
    value = properties[key] if isinstance(properties[key], dict) else {}
    return "{" + json.dumps(key) + ": " + ('"' if value.get("type") == "string" else "")


def template_message(message: ChatMessage) -> dict[str, Any]:
    """One message as chat templates read it: text content, and tool calls with their
    arguments as a mapping (templates write them with `tojson`)."""
    # Most chat templates know only system/user/assistant; "developer" is OpenAI's new
    # name for the system role.
    role = "system" if message.role == "developer" else message.role
    rendered: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name:
        rendered["name"] = message.name
    if message.tool_calls:
        rendered["tool_calls"] = [{
            "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"],
                         "arguments": _arguments(call["function"]["arguments"])},
        } for call in message.tool_calls]
    if message.tool_call_id:
        rendered["tool_call_id"] = message.tool_call_id
    return rendered


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # the model wrote it so; the template shows it as it is
