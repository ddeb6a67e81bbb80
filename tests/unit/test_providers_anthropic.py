"""The Anthropic adapter's pure transforms: request, answer, stream events, errors."""

from __future__ import annotations

import json

import pytest

from modelport.errors import InvalidRequestError, PayloadTooLargeError, UpstreamError
from modelport.protocol import ChatCompletionRequest
from modelport.foreign import anthropic_upstream as anthropic


def request(**fields):
    return ChatCompletionRequest.model_validate({"model": "claude", **fields})


def build(**fields):
    return anthropic.chat_request(request(**fields), "claude-sonnet-4-5", default_max_tokens=4096,
                                  ranges={"temperature": (0.0, 1.0)}, stream=False)


def test_system_prompts_move_out_and_parameters_are_renamed():
    body = build(messages=[{"role": "system", "content": "Be brief."},
                           {"role": "developer", "content": "Answer in English."},
                           {"role": "user", "content": "Hi"}],
                 max_completion_tokens=50, temperature=1.7, top_p=0.9, stop="END", user="u1")
    assert body == {"model": "claude-sonnet-4-5", "system": "Be brief.\n\nAnswer in English.",
                    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50,
                    "temperature": 1.0, "top_p": 0.9, "stop_sequences": ["END"],
                    "metadata": {"user_id": "u1"}}


def test_max_tokens_defaults_because_anthropic_requires_it():
    assert build(messages=[{"role": "user", "content": "Hi"}])["max_tokens"] == 4096


def test_images_tool_calls_and_tool_results_become_content_blocks():
    body = build(
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
        ],
        tools=[{"type": "function", "function": {"name": "lookup", "description": "Find",
                                                 "parameters": {"type": "object"}}}],
        tool_choice="required")
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"}]},
    ]
    assert body["tools"] == [{"name": "lookup", "description": "Find",
                              "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "any"}


def test_what_anthropic_cannot_do_is_a_400_naming_the_parameter():
    with pytest.raises(InvalidRequestError) as error:
        build(messages=[{"role": "user", "content": "Hi"}], n=2)
    assert error.value.param == "n"


def test_answer_maps_text_tool_use_stop_reason_and_usage():
    answer = anthropic.chat_response({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                     "input": {"q": "cat"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}},
        "claude")
    choice = answer["choices"][0]
    assert answer["model"] == "claude" and answer["object"] == "chat.completion"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "lookup", "arguments": '{"q":"cat"}'}}]
    assert answer["usage"] == {"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22}


@pytest.mark.parametrize("reason, finish", [("end_turn", "stop"), ("max_tokens", "length"),
                                            ("stop_sequence", "stop"), ("refusal", "content_filter")])
def test_stop_reasons(reason, finish):
    answer = anthropic.chat_response({"content": [], "stop_reason": reason}, "m")
    assert answer["choices"][0]["finish_reason"] == finish


# The event sequence of the Messages API streaming docs (text, then a tool call).
STREAM = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                          "content": [], "model": "claude-sonnet-4-5",
                                          "usage": {"input_tokens": 25, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": '{"q": "c'}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": 'at"}'}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 15}},
    {"type": "message_stop"},
]


def test_stream_events_become_openai_chunks():
    translator = anthropic.StreamTranslator("claude")
    chunks = [chunk for event in STREAM for chunk in translator.feed(event)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello!"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "toolu_1", "type": "function",
                        "function": {"name": "lookup", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"q": "cat"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    assert {c["id"] for c in chunks} == {"msg_1"} and translator.finished


def test_error_event_and_error_statuses_map_to_our_errors():
    translator = anthropic.StreamTranslator("claude")
    with pytest.raises(UpstreamError) as error:
        translator.feed({"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})
    assert error.value.status == 503 and error.value.message == "Overloaded"
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                  "message": "Overloaded"}}).encode()
    assert anthropic.error_from_status(529, body).status == 503
    assert isinstance(anthropic.error_from_status(400, json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "bad"}}).encode()), InvalidRequestError)
    assert isinstance(anthropic.error_from_status(413, b"{}"), PayloadTooLargeError)
    assert anthropic.error_from_status(429, body).status == 429


def test_event_data_reads_the_data_line():
    assert anthropic.event_data(b'event: ping\ndata: {"type": "ping"}\n\n') == {"type": "ping"}
    assert anthropic.event_data(b"event: ping\n\n") is None
