"""Anthropic Messages API request bodies, validated once at the edge of /v1/messages.

TypedDicts (as in protocol_parts) so a validated block stays the dict the client sent;
unions pick their branch with a "~"-tagged discriminator so an error names the field, not
the branch. Unknown fields are accepted, as Anthropic adds fields often.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, with_config
from typing_extensions import NotRequired, TypedDict

from modelport.errors import InvalidRequestError
from modelport.protocol import MAX_TOKENS_LIMIT, validate_request
from modelport.protocol_parts import OPEN, Name


@with_config(OPEN)
class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


@with_config(OPEN)
class ImageSource(TypedDict):
    type: Literal["base64", "url"]
    media_type: NotRequired[str]
    data: NotRequired[str]
    url: NotRequired[str]


@with_config(OPEN)
class ImageBlock(TypedDict):
    type: Literal["image"]
    source: ImageSource


@with_config(OPEN)
class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: Name
    name: Name
    input: dict[str, Any]


def _result_part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return f"~{kind}" if kind in ("text", "image") else None


ToolResultPart = Annotated[
    Union[Annotated[TextBlock, Tag("~text")], Annotated[ImageBlock, Tag("~image")]],
    Discriminator(_result_part_tag, custom_error_type="invalid_content_block",
                  custom_error_message="a tool_result content block needs `type`: text or image"),
]


@with_config(OPEN)
class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: Name
    content: NotRequired[str | list[ToolResultPart]]
    is_error: NotRequired[bool]


@with_config(OPEN)
class ThinkingBlock(TypedDict):
    """Sent back by clients as part of an earlier assistant turn; models here never see it."""

    type: Literal["thinking", "redacted_thinking"]


BLOCKS = {"text": TextBlock, "image": ImageBlock, "tool_use": ToolUseBlock,
          "tool_result": ToolResultBlock, "thinking": ThinkingBlock,
          "redacted_thinking": ThinkingBlock}


def _block_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return f"~{kind}" if kind in BLOCKS else None


ContentBlock = Annotated[
    Union[tuple(Annotated[shape, Tag(f"~{kind}")] for kind, shape in BLOCKS.items())],  # type: ignore[misc]
    Discriminator(_block_tag, custom_error_type="invalid_content_block",
                  custom_error_message="a content block needs `type`: one of " + ", ".join(BLOCKS)),
]


class InputMessage(BaseModel):
    model_config = OPEN
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


@with_config(OPEN)
class ToolDefinition(TypedDict):
    name: Name
    description: NotRequired[str]
    input_schema: dict[str, Any]
    type: NotRequired[Literal["custom"]]


@with_config(OPEN)
class ToolChoice(TypedDict):
    type: Literal["auto", "any", "tool", "none"]
    name: NotRequired[Name]
    disable_parallel_tool_use: NotRequired[bool]


@with_config(OPEN)
class JSONOutputFormat(TypedDict):
    type: Literal["json_schema"]
    schema: dict[str, Any]


@with_config(OPEN)
class OutputConfig(TypedDict):
    format: NotRequired[JSONOutputFormat | None]
    effort: NotRequired[str | None]  # a reasoning budget: nothing here to spend it on


class CountTokensRequest(BaseModel):
    """What /v1/messages/count_tokens reads: the prompt half of a Messages request."""

    model_config = OPEN
    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None

    def system_text(self) -> str | None:
        if isinstance(self.system, list):
            return "\n\n".join(block["text"] for block in self.system) or None
        return self.system or None

    def check_tool_choice(self) -> None:
        choice = self.tool_choice
        if choice is None or choice["type"] in ("auto", "none"):
            return
        names = {tool["name"] for tool in self.tools or ()}
        if not names:
            raise InvalidRequestError(f"tool_choice '{choice['type']}' needs `tools` to choose "
                                      "from", param="tool_choice")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise InvalidRequestError(
                f"tool_choice names the tool '{choice.get('name')}', which is not among "
                f"`tools` ({', '.join(sorted(names))})", param="tool_choice.name")


class MessagesRequest(CountTokensRequest):
    # Required, as Anthropic requires it: there is no server-side default to fall back on.
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_LIMIT)
    stop_sequences: list[Name] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None


def parse(model: type[CountTokensRequest], data: dict[str, Any]) -> Any:
    request = validate_request(model, data)  # type: ignore[type-var]
    request.check_tool_choice()
    return request
