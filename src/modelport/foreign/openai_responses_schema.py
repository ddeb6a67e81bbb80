"""The OpenAI Responses API request (`POST /v1/responses`), validated once at the edge.

Values stay the plain dicts the client sent (TypedDicts, unknown keys kept), so the
translation reads them as dicts. Features that would change the answer and that modelport
cannot honour are refused by name (`unsupported_feature`) before the shapes are checked,
so a client learns "web_search is not supported" rather than "tools[0].name is missing".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator, with_config
from typing_extensions import NotRequired, TypedDict

from modelport.errors import InvalidRequestError
from modelport.protocol import MAX_TOKENS_LIMIT, OpenAIRequest
from modelport.protocol_parts import OPEN, Name



@with_config(OPEN)
class InputText(TypedDict):
    type: Literal["input_text"]
    text: str


@with_config(OPEN)
class OutputText(TypedDict):
    type: Literal["output_text"]
    text: str


@with_config(OPEN)
class Refusal(TypedDict):
    type: Literal["refusal"]
    refusal: str


@with_config(OPEN)
class InputImage(TypedDict):
    type: Literal["input_image"]
    image_url: str
    detail: NotRequired[Literal["low", "high", "auto"] | None]


@with_config(OPEN)
class InputFile(TypedDict):
    type: Literal["input_file"]
    file_data: str
    filename: NotRequired[str | None]


_PARTS = {"input_text": InputText, "output_text": OutputText, "refusal": Refusal,
          "input_image": InputImage, "input_file": InputFile}


def _tag(kinds: dict[str, Any]) -> Any:
    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else None
        return f"~{kind}" if kind in kinds else None
    return tag


def _union(kinds: dict[str, Any], what: str) -> Any:
    return Annotated[
        Union[tuple(Annotated[shape, Tag(f"~{kind}")] for kind, shape in kinds.items())],  # type: ignore[misc]
        Discriminator(_tag(kinds), custom_error_type="invalid_content_part",
                      custom_error_message=f"{what} needs `type`: one of " + ", ".join(kinds)),
    ]


ContentPart = _union(_PARTS, "a content part")
Content = Union[str, list[ContentPart]]


@with_config(OPEN)
class MessageItem(TypedDict):
    type: NotRequired[Literal["message"]]
    role: Literal["user", "system", "developer", "assistant"]
    content: Content


@with_config(OPEN)
class FunctionCallItem(TypedDict):
    type: Literal["function_call"]
    call_id: Name
    name: Name
    arguments: str  # JSON text, as the model wrote it


@with_config(OPEN)
class FunctionCallOutputItem(TypedDict):
    type: Literal["function_call_output"]
    call_id: Name
    output: Content


_ITEMS = {"message": MessageItem, "function_call": FunctionCallItem,
          "function_call_output": FunctionCallOutputItem}


def _item_tag(value: Any) -> str | None:
    if isinstance(value, dict) and "type" not in value:
        return "~message"  # the "easy" input message: {role, content}
    return _tag(_ITEMS)(value)


InputItem = Annotated[
    Union[tuple(Annotated[shape, Tag(f"~{kind}")] for kind, shape in _ITEMS.items())],  # type: ignore[misc]
    Discriminator(_item_tag, custom_error_type="invalid_content_part",
                  custom_error_message="an input item needs `type`: one of " + ", ".join(_ITEMS)),
]


Input = Annotated[
    Union[Annotated[Annotated[str, Field(min_length=1)], Tag("~text")],
          Annotated[Annotated[list[InputItem], Field(min_length=1)], Tag("~items")]],
    Discriminator(lambda value: "~text" if isinstance(value, str) else "~items"),
]


@with_config(OPEN)
class FunctionTool(TypedDict):
    type: Literal["function"]
    name: Name
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]
    strict: NotRequired[bool | None]


@with_config(OPEN)
class NamedFunction(TypedDict):
    type: Literal["function"]
    name: Name


ToolChoice = Union[Literal["none", "auto", "required"], NamedFunction]


@with_config(OPEN)
class PlainTextFormat(TypedDict):
    type: Literal["text"]


@with_config(OPEN)
class JSONObjectFormat(TypedDict):
    type: Literal["json_object"]


@with_config(OPEN)
class JSONSchemaFormat(TypedDict):
    type: Literal["json_schema"]
    name: Name
    schema: dict[str, Any]
    description: NotRequired[str | None]
    strict: NotRequired[bool | None]


TextFormat = _union({"text": PlainTextFormat, "json_object": JSONObjectFormat,
                     "json_schema": JSONSchemaFormat}, "text.format")


@with_config(OPEN)
class TextConfig(TypedDict):
    format: NotRequired[TextFormat | None]


class ResponsesRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    input: Input
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: TextConfig | None = None
    stream: bool | None = False
    store: bool | None = True
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    user: str | None = None

    @model_validator(mode="after")
    def _tool_choice_matches_tools(self) -> "ResponsesRequest":
        choice = self.tool_choice
        if isinstance(choice, dict) or choice == "required":
            names = {tool["name"] for tool in self.tools or ()}
            if not names:
                raise ValueError(f"tool_choice {choice!r} needs `tools` to choose from")
            if isinstance(choice, dict) and choice["name"] not in names:
                raise ValueError(f"tool_choice names the function '{choice['name']}', "
                                 f"which is not among `tools` ({', '.join(sorted(names))})")
        return self

    def text_format(self) -> dict[str, Any] | None:
        return (self.text or {}).get("format")


# Request fields whose only accepted values are these (a default, or "nothing asked for");
# anything else would change the answer in a way modelport cannot honour.
_ONLY = {
    "background": (None, False),
    "conversation": (None,),
    "prompt": (None,),
    "reasoning": (None,),
    # Reasoning items are never produced here, so there is nothing to include for them.
    "include": (None, [], ["reasoning.encrypted_content"]),
    "top_logprobs": (None, 0),
    "truncation": (None, "disabled"),
    "max_tool_calls": (None,),
}
_WHY = {
    "background": "background responses",
    "conversation": "server-side conversations (send `previous_response_id` or the items)",
    "prompt": "stored prompt templates",
    "reasoning": "reasoning options",
    "include": "extra output data (`include`)",
    "top_logprobs": "log probabilities",
    "truncation": "automatic truncation (`truncation: auto`)",
    "max_tool_calls": "`max_tool_calls`",
}
# Content parts that point at OpenAI-hosted files or other inputs modelport has no store for.
_HOSTED_FILE_FIELDS = ("file_id", "file_url")


def _refuse(what: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"modelport's Responses API does not support {what}", param=param,
                               code="unsupported_parameter")


def _unsupported_part(part: Any, param: str) -> InvalidRequestError | None:
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind == "input_audio":
        return _refuse("audio input", f"{param}.type")
    if kind in ("input_image", "input_file"):
        for field in _HOSTED_FILE_FIELDS:
            if part.get(field) is not None:
                return _refuse(f"`{field}` in {kind} parts (there is no file store; send "
                               f"{'image_url' if kind == 'input_image' else 'file_data'})",
                               f"{param}.{field}")
    return None


def _unsupported_item(item: Any, param: str) -> InvalidRequestError | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if isinstance(kind, str) and kind not in _ITEMS:
        return _refuse(f"'{kind}' input items (only message, function_call and "
                       "function_call_output)", f"{param}.type")
    content = item.get("content") if kind == "message" else item.get("output")
    if isinstance(content, list):
        for index, part in enumerate(content):
            found = _unsupported_part(part, f"{param}.{'content' if kind == 'message' else 'output'}"
                                            f"[{index}]")
            if found:
                return found
    return None


def unsupported_feature(data: dict[str, Any]) -> InvalidRequestError | None:
    """The first feature in a raw request body that modelport would have to ignore."""
    for field, accepted in _ONLY.items():
        value = data.get(field)
        if isinstance(value, dict) and not any(v is not None for v in value.values()):
            value = None  # e.g. reasoning: {"effort": null}, which asks for nothing
        if value not in accepted:
            return _refuse(_WHY[field], field)
    tools = data.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind != "function":
                return _refuse(f"built-in '{kind}' tools (only function tools)",
                               f"tools[{index}].type")
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("type"), str) \
            and choice["type"] != "function":
        return _refuse(f"tool_choice of type '{choice['type']}' (only auto, none, required or "
                       "a named function)", "tool_choice.type")
    items = data.get("input")
    if isinstance(items, list):
        for index, item in enumerate(items):
            found = _unsupported_item(item, f"input[{index}]")
            if found:
                return found
    return None
