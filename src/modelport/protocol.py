"""OpenAI request schemas, validated once at the edge. Imports no engine.

Unknown OpenAI fields are accepted (and kept, so they reach the upstream); wrong types
and impossible values become a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Type, TypeVar, Union

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from modelport.errors import InvalidRequestError
from modelport.multipart import FilePart
from modelport.protocol_parts import MEDIA_PARTS, ContentPart, Tool, ToolCall, ToolChoice

_Request = TypeVar("_Request", bound="OpenAIRequest")


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def has_media_input(self) -> bool:
        return False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


# What `_content_present` checks, said in the schema so that /openapi.json (and clients
# or fuzzers generating from it) know it too.
_CONTENT_PRESENT = {"anyOf": [
    {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
    {"required": ["role", "tool_calls"], "properties": {
        "role": {"const": "assistant"}, "tool_calls": {"type": "array", "minItems": 1}}},
]}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_CONTENT_PRESENT)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> "ChatMessage":
        if self.content is None and self.role not in ("assistant",):
            raise ValueError(f"a '{self.role}' message needs `content`")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs `tool_call_id` (the id of the call it answers)")
        return self

    def text(self) -> str:
        """The message's text, joining text parts of multi-part content."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema":
            if not isinstance(self.json_schema, dict) or not isinstance(
                self.json_schema.get("schema", {}), dict
            ):
                raise ValueError("type 'json_schema' needs json_schema: {name, schema: {...}}")
        return self


# Engines keep token counts in 32-bit integers: a larger max_tokens wrapped round to a
# negative number (or to no limit at all) instead of being refused.
MAX_TOKENS_LIMIT = 2**31 - 1


class _SamplingFields(OpenAIRequest):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 16:
            raise ValueError("at most 16 stop sequences are allowed")
        return stop

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _tool_choice_matches_tools(self) -> "ChatCompletionRequest":
        choice = self.tool_choice
        if choice is None or choice in ("none", "auto"):
            return self
        names = {tool["function"]["name"] for tool in self.tools or ()}
        if not names:
            raise ValueError(f"tool_choice {choice!r} needs `tools` to choose from")
        if isinstance(choice, dict) and choice["function"]["name"] not in names:
            raise ValueError(f"tool_choice names the function '{choice['function']['name']}', "
                             f"which is not among `tools` ({', '.join(sorted(names))})")
        return self

    def has_media_input(self) -> bool:
        """Whether any message carries an image, audio or file part (not just text)."""
        return any(
            isinstance(message.content, list)
            and any(part["type"] in MEDIA_PARTS for part in message.content)
            for message in self.messages
        )

    def output_limit(self) -> int | None:
        """max_completion_tokens wins over the older max_tokens when both are sent."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, prompt: Any) -> Any:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must not be an empty list")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], str):
            sequences = prompt if isinstance(prompt[0], list) else [prompt]
            if any(token < 0 for ids in sequences for token in ids):
                raise ValueError("token ids in prompt must not be negative")
        return prompt

    def output_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs per request")
        if isinstance(value, list) and any(isinstance(v, str) and v == "" for v in value):
            raise ValueError("input strings must not be empty")
        if value == "":
            raise ValueError("input must not be an empty string")
        return value

    def texts(self) -> list[str] | None:
        """The inputs as strings, or None when the client sent token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return list(self.input)  # type: ignore[arg-type]
        return None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str = Field(min_length=1)


def _document_tag(value: Any) -> str:
    return "~object" if isinstance(value, dict) or isinstance(value, RerankDocument) else "~text"


# A document is a string or {"text": ...}; the tags keep pydantic's branch names out of
# the `param` an error names (see `_is_branch_label`).
Document = Annotated[
    Union[Annotated[str, Field(min_length=1), Tag("~text")],
          Annotated[RerankDocument, Tag("~object")]],
    Discriminator(_document_tag),
]
MAX_RERANK_DOCUMENTS = 1000


class RerankRequest(OpenAIRequest):
    """POST /v1/rerank in the shape Cohere, Jina, vLLM and Xinference share."""

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[Document] = Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    # Said so that `stream: true` is a clear 400, not a field passed on to the upstream.
    stream: Literal[False] | None = Field(None, description="/v1/rerank does not stream")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


# orjson parses up to 1024 levels of nesting but encodes only this many, so a deeper body
# would pass here and fail when forwarded (a 500 that also cost the client its connection).
ENCODABLE_DEPTH = 254


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    # The test is the very re-encoding that would fail later: SIMD-fast, a third of a
    # parse's cost at worst (measured: 0.7 us on a chat body, where counting brackets
    # with bytes.count costs more and is slower than parsing on long prompts).
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        raise InvalidRequestError(
            f"request body is nested too deeply (at most {ENCODABLE_DEPTH} levels)") from None
    return data


def _is_branch_label(item: Any) -> bool:
    """Pydantic names the union branch it tried in an error's location ('str', 'list[int]',
    or our own '~text' tags); a client knows only field names and indexes."""
    return isinstance(item, str) and (item == "str" or "[" in item or item.startswith("~"))


def _param_name(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not _is_branch_label(item):
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _located(error: dict[str, Any]) -> str:
    param = _param_name(tuple(error["loc"]))
    if error["type"] == "invalid_content_part" and isinstance(error.get("input"), dict):
        param += ".type"
    return param


def _relevant(errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(param, message) per error, leaving out an error on a field when another error lies
    inside that field: that is a union branch the client did not mean (content sent as a
    list also fails as a string)."""
    located = [(_located(error), error["msg"]) for error in errors]
    params = [param for param, _ in located]
    return [
        (param, message) for param, message in located
        if not any(other != param and other.startswith(param) and other[len(param)] in ".["
                   for other in params)
    ] or located


def validate_request(model: Type[_Request], data: dict[str, Any]) -> _Request:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        relevant = _relevant(error.errors(include_url=False))
        details = "; ".join(f"{param or 'body'}: {message}" for param, message in relevant[:5])
        raise InvalidRequestError(f"invalid request: {details}", param=relevant[0][0] or None) from None


class AudioTranscriptionRequest(OpenAIRequest):
    """/v1/audio/transcriptions: a multipart form with the audio file and the model; the
    other fields (language, prompt, response_format, temperature ...) go upstream as sent."""

    model: str
    file: Any
    stream: bool = False

    @field_validator("file")
    @classmethod
    def _an_uploaded_file(cls, value: Any) -> Any:
        if not isinstance(value, FilePart):
            raise ValueError("must be an uploaded file (a multipart/form-data file field)")
        if not value.data:
            raise ValueError("the uploaded file is empty")
        return value

    @field_validator("stream", mode="before", check_fields=False)
    @classmethod
    def _not_streamed(cls, value: Any) -> Any:
        if value not in (None, False, "false", "False", "0", ""):
            raise ValueError("streamed transcriptions are not relayed; leave `stream` out")
        return False

    def wants_text(self) -> bool:
        """response_format text, srt or vtt: the answer is text, not a JSON object."""
        return (self.model_extra or {}).get("response_format") in ("text", "srt", "vtt")
