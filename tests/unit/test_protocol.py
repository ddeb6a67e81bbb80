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
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
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
