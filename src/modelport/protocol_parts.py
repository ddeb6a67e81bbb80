"""The shapes inside a chat request: content parts, tool calls, tools and tool_choice.

TypedDicts rather than models: a validated value stays the plain dict the client sent
(unknown keys included), so code that reads parts as dicts (the Anthropic translation,
plugins, `ChatMessage.text`) keeps working, while a wrong shape is still a 400 at the edge.

Unions pick their branch with a callable discriminator whose tags start with "~", so an
error location names the branch in a way `protocol._param_name` can drop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, with_config
from typing_extensions import NotRequired, TypedDict

# Parts keep the fields OpenAI adds later (they reach the upstream as sent).
OPEN = ConfigDict(extra="allow")
Name = Annotated[str, Field(min_length=1)]


@with_config(OPEN)
class TextPart(TypedDict):
    type: Literal["text"]
    text: str


@with_config(OPEN)
class ImageURL(TypedDict):
    url: str
    detail: NotRequired[str]


@with_config(OPEN)
class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURL


@with_config(OPEN)
class InputAudio(TypedDict):
    data: str
    format: str


@with_config(OPEN)
class AudioPart(TypedDict):
    type: Literal["input_audio"]
    input_audio: InputAudio


@with_config(OPEN)
class FileData(TypedDict):
    file_data: NotRequired[str]
    file_id: NotRequired[str]
    filename: NotRequired[str]


@with_config(OPEN)
class FilePart(TypedDict):
    type: Literal["file"]
    file: FileData


@with_config(OPEN)
class RefusalPart(TypedDict):
    type: Literal["refusal"]
    refusal: str


# Parts a text-only model cannot read (refusal parts are assistant text).
MEDIA_PARTS = frozenset({"image_url", "input_audio", "file"})
_PARTS = {"text": TextPart, "image_url": ImagePart, "input_audio": AudioPart,
          "file": FilePart, "refusal": RefusalPart}


def _part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return f"~{kind}" if kind in _PARTS else None


ContentPart = Annotated[
    Union[tuple(Annotated[shape, Tag(f"~{kind}")] for kind, shape in _PARTS.items())],  # type: ignore[misc]
    Discriminator(
        _part_tag, custom_error_type="invalid_content_part",
        custom_error_message="a content part needs `type`: one of " + ", ".join(_PARTS),
    ),
]


@with_config(OPEN)
class FunctionCall(TypedDict):
    name: Name
    arguments: str  # JSON text, as OpenAI sends it; the model wrote it, so it may not parse


@with_config(OPEN)
class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


@with_config(OPEN)
class FunctionDefinition(TypedDict):
    name: Name
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any]]
    strict: NotRequired[bool | None]


@with_config(OPEN)
class Tool(TypedDict):
    type: Literal["function"]
    function: FunctionDefinition


@with_config(OPEN)
class FunctionName(TypedDict):
    name: Name


@with_config(OPEN)
class NamedToolChoice(TypedDict):
    type: Literal["function"]
    function: FunctionName


def _choice_tag(value: Any) -> str:
    return "~named" if isinstance(value, dict) else "~mode"


ToolChoice = Annotated[
    Union[Annotated[Literal["none", "auto", "required"], Tag("~mode")],
          Annotated[NamedToolChoice, Tag("~named")]],
    Discriminator(_choice_tag),
]
