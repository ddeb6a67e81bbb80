from __future__ import annotations

import pytest

from modelport.errors import InvalidRequestError
from modelport.protocol import (
    ChatCompletionRequest,
    EmbeddingRequest,
    parse_json_body,
    validate_request,
)


def chat(**fields):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_unknown_fields_are_kept_and_reported():
    request = validate_request(ChatCompletionRequest, chat(frobnicate=1))
    assert request.unknown_fields() == ["frobnicate"]


def test_max_completion_tokens_wins_over_max_tokens():
    request = validate_request(ChatCompletionRequest, chat(max_tokens=5, max_completion_tokens=9))
    assert request.output_limit() == 9


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"stop": ["a"] * 17}, "stop"),
    ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"messages": [{"role": "assistant"}]}, "messages[0]"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
])
def test_invalid_values_name_the_param(fields, param):
    with pytest.raises(InvalidRequestError) as error:
        validate_request(ChatCompletionRequest, chat(**fields))
    assert error.value.param == param
    assert error.value.status == 400


def test_multipart_content_text():
    request = validate_request(ChatCompletionRequest, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
        {"type": "text", "text": "b"}]}]))
    assert request.messages[0].text() == "ab"


def test_embedding_inputs():
    assert validate_request(EmbeddingRequest, {"model": "e", "input": "x"}).texts() == ["x"]
    assert validate_request(EmbeddingRequest, {"model": "e", "input": [1, 2]}).texts() is None
    for bad in ("", [], [""]):
        with pytest.raises(InvalidRequestError):
            validate_request(EmbeddingRequest, {"model": "e", "input": bad})


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"\xff"])
def test_body_must_be_a_json_object(body):
    with pytest.raises(InvalidRequestError):
        parse_json_body(body)


def _user(*parts):
    return chat(messages=[{"role": "user", "content": list(parts)}])


def _assistant_calls(*calls):
    return chat(messages=[{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": None, "tool_calls": list(calls)}])


def _tools(*tools):
    return chat(tools=list(tools))


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("body, param", [
    (_user({"type": "text", "text": "a"}, {"type": "text"}), "messages[0].content[1].text"),
    (_user({"type": "text", "text": 5}), "messages[0].content[0].text"),
    (_user({"type": "video", "video": {}}), "messages[0].content[0].type"),
    (_user({"text": "no type"}), "messages[0].content[0].type"),
    (_user("a bare string"), "messages[0].content[0]"),
    (_user({"type": "image_url"}), "messages[0].content[0].image_url"),
    (_user({"type": "image_url", "image_url": {}}), "messages[0].content[0].image_url.url"),
    (_user({"type": "image_url", "image_url": "http://x/y.png"}),
     "messages[0].content[0].image_url"),
    (_user({"type": "input_audio", "input_audio": {"data": "AAAA"}}),
     "messages[0].content[0].input_audio.format"),
    (_user({"type": "file", "file": "f"}), "messages[0].content[0].file"),
    (_assistant_calls({}), "messages[1].tool_calls[0].id"),
    (_assistant_calls({**_CALL, "type": "nope"}), "messages[1].tool_calls[0].type"),
    (_assistant_calls({**_CALL, "function": {"arguments": "{}"}}),
     "messages[1].tool_calls[0].function.name"),
    (_assistant_calls({**_CALL, "function": {"name": "f", "arguments": {"a": 1}}}),
     "messages[1].tool_calls[0].function.arguments"),
    (_tools({}), "tools[0].type"),
    (_tools({"type": "function"}), "tools[0].function"),
    (_tools({"type": "function", "function": {}}), "tools[0].function.name"),
    (_tools({"type": "function", "function": {"name": ""}}), "tools[0].function.name"),
    (_tools({"type": "function", "function": {"name": "f", "parameters": []}}),
     "tools[0].function.parameters"),
    (_tools(_TOOL, "f"), "tools[1]"),
    (chat(tools=[_TOOL], tool_choice="maybe"), "tool_choice"),
    (chat(tools=[_TOOL], tool_choice={"type": "function"}), "tool_choice.function"),
    (chat(tools=[_TOOL], tool_choice={"type": "function", "function": {}}),
     "tool_choice.function.name"),
])
def test_malformed_parts_tool_calls_and_tools_name_the_field(body, param):
    with pytest.raises(InvalidRequestError) as error:
        validate_request(ChatCompletionRequest, body)
    assert error.value.param == param
    assert error.value.status == 400
    assert param in error.value.message


def test_well_formed_parts_and_tools_stay_the_dicts_the_client_sent():
    parts = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ]
    request = validate_request(ChatCompletionRequest, {
        **_assistant_calls(_CALL), "tools": [_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "messages": [{"role": "user", "content": parts},
                     {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}],
                      "tool_calls": [_CALL]}],
    })
    assert request.messages[0].content == parts
    assert request.messages[0].text() == "a"
    assert request.messages[1].tool_calls == [_CALL]
    assert request.tools == [_TOOL]
    assert request.tool_choice == {"type": "function", "function": {"name": "f"}}
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert validate_request(ChatCompletionRequest, chat(tool_choice="required", tools=tools)
                            ).tool_choice == "required"


def test_media_input_is_noticed():
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    assert validate_request(ChatCompletionRequest, _user({"type": "text", "text": "a"}, image)).has_media_input()
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    assert validate_request(ChatCompletionRequest, _user(audio)).has_media_input()
    assert not validate_request(ChatCompletionRequest, _user({"type": "text", "text": "a"})).has_media_input()
    assert not validate_request(ChatCompletionRequest, chat()).has_media_input()


def _nested(levels: int) -> bytes:
    return b'{"model":"m","x":' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("levels", [254, 300, 1000])
def test_deep_nesting_is_refused_before_it_fails_to_re_encode(levels):
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        parse_json_body(_nested(levels))


def test_nesting_up_to_the_bound_and_brackets_in_strings_are_fine():
    assert parse_json_body(_nested(253))["model"] == "m"  # 254 levels with the body itself
    text = "[" * 500 + "{" * 500
    assert parse_json_body(b'{"messages":[{"content":"' + text.encode() + b'"}]}')
    wide = b'{"input":[' + b",".join(b"[1,2]" for _ in range(3000)) + b"]}"
    assert len(parse_json_body(wide)["input"]) == 3000


@pytest.mark.parametrize("extra, needle", [
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "sunny"}]},
     "tool_call_id"),
    ({"tool_choice": "required"}, "needs `tools`"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}},
      "tools": [{"type": "function", "function": {"name": "get_weather"}}]}, "not among"),
])
def test_tool_messages_and_tool_choice_must_be_consistent(extra, needle):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(InvalidRequestError, match=needle):
        validate_request(ChatCompletionRequest, body)


def test_a_named_tool_choice_among_tools_is_accepted():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    assert validate_request(ChatCompletionRequest, body).tool_choice["function"]["name"] == \
        "get_weather"
