"""The downstream half of the Anthropic translation: Messages requests to chat bodies, chat
answers and chunks back to Anthropic messages and events, stop sequences and errors."""

from __future__ import annotations

import json

import pytest

from modelport.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    PayloadTooLargeError,
    RateLimitError,
    UpstreamError,
)
from modelport.foreign import anthropic_downstream as anthropic
from modelport.foreign import anthropic_events
from modelport.foreign import anthropic_upstream
from modelport.foreign.anthropic_schema import CountTokensRequest, MessagesRequest, parse


def request(**fields):
    return parse(MessagesRequest, {"model": "m", "max_tokens": 64, **fields})


def test_system_blocks_sampling_and_tools_become_a_chat_body():
    body = anthropic.chat_body(request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        temperature=0.2, top_p=0.9, top_k=40, stream=True, metadata={"user_id": "u1"},
        stop_sequences=["END"],
        tools=[{"name": "weather", "description": "Get weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True}))
    assert body == {
        "model": "m", "max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
        "stream": True,
        "messages": [{"role": "system", "content": "Be brief.\n\nBe kind."},
                     {"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize("choice, expected", [({"type": "auto"}, "auto"),
                                              ({"type": "any"}, "required"),
                                              ({"type": "none"}, "none")])
def test_tool_choice_modes(choice, expected):
    body = anthropic.chat_body(request(
        messages=[{"role": "user", "content": "Hi"}], tool_choice=choice,
        tools=[{"name": "f", "input_schema": {"type": "object"}}]))
    assert body["tool_choice"] == expected and "parallel_tool_calls" not in body


def test_tool_use_and_tool_results_round_trip_into_chat_messages():
    body = anthropic.chat_body(request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "sunny"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city",
             "is_error": True},
            {"type": "text", "text": "Thanks"}]},
    ]))
    assert body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "Thanks"},
    ]


def test_images_become_image_url_parts():
    body = anthropic.chat_body(request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
    ]}]))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


def test_both_directions_share_the_block_mappings():
    """An OpenAI request translated upstream and back downstream is the same request."""
    from modelport.protocol import ChatCompletionRequest
    openai = {"model": "m", "max_tokens": 20, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Get",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "required"}
    upstream = anthropic_upstream.chat_request(ChatCompletionRequest.model_validate(openai), "m",
                                      default_max_tokens=1, ranges={}, stream=False)
    assert anthropic.chat_body(parse(MessagesRequest, upstream)) == openai


@pytest.mark.parametrize("fields, param", [
    ({}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
    ({"temperature": 1.5}, "temperature"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "g"}},
     "tool_choice.name"),
    ({"stop_sequences": [""]}, "stop_sequences[0]"),
])
def test_bad_requests_are_400s_naming_the_parameter(fields, param):
    data = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    if "max_tokens" not in fields and param != "max_tokens":
        data["max_tokens"] = 10
    with pytest.raises(InvalidRequestError) as error:
        parse(MessagesRequest, data)
    assert error.value.param == param


def test_an_empty_user_turn_is_a_400():
    with pytest.raises(InvalidRequestError) as error:
        anthropic.chat_body(request(messages=[{"role": "user", "content": []}]))
    assert error.value.param == "messages[0].content"


def test_tool_use_in_a_user_turn_is_a_400_naming_the_block():
    with pytest.raises(InvalidRequestError) as error:
        anthropic.chat_body(request(messages=[{"role": "user", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]))
    assert error.value.param == "messages[0].content[0].type"


def test_count_tokens_needs_no_max_tokens():
    parsed = parse(CountTokensRequest, {"model": "m", "messages": [{"role": "user",
                                                                     "content": "Hi"}]})
    assert anthropic.chat_prompt(parsed) == {"model": "m", "messages": [
        {"role": "user", "content": "Hi"}]}


def completion(content, finish="stop", tool_calls=None):
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "c1", "object": "chat.completion", "model": "served",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


def test_answer_becomes_an_anthropic_message():
    message = anthropic.message_from_chat(completion("Hello!"), None)
    assert message["id"].startswith("msg_")
    assert {k: v for k, v in message.items() if k != "id"} == {
        "type": "message", "role": "assistant", "model": "served",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 5}}


def test_tool_call_answer_becomes_tool_use_blocks():
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    message = anthropic.message_from_chat(completion(None, "tool_calls", [call]), None)
    assert message["content"] == [{"type": "tool_use", "id": "call_1", "name": "weather",
                                   "input": {"city": "Paris"}}]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize("finish, reason", [("stop", "end_turn"), ("length", "max_tokens"),
                                            ("tool_calls", "tool_use"),
                                            ("content_filter", "refusal")])
def test_finish_reasons_map_to_stop_reasons(finish, reason):
    assert anthropic.message_from_chat(completion("x", finish), None)["stop_reason"] == reason


def test_a_matched_stop_sequence_cuts_the_text_and_is_named():
    message = anthropic.message_from_chat(completion("one two STOP three", "length"),
                                          ["END", "STOP"])
    assert message["content"] == [{"type": "text", "text": "one two "}]
    assert message["stop_reason"] == "stop_sequence" and message["stop_sequence"] == "STOP"


def test_stop_matcher_holds_back_a_possible_start_of_a_stop_sequence():
    matcher = anthropic.StopMatcher(["\n\nHuman:"])
    assert matcher.feed("Hi\n") == "Hi"
    assert matcher.feed("\nHum") == ""
    assert matcher.feed("ble") == "\n\nHumble"  # it was not the stop sequence after all
    assert matcher.feed(" ok\n\nHuman: more") == " ok" and matcher.matched == "\n\nHuman:"
    assert matcher.feed("anything") == ""


def events_of(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            parsed = json.loads(data[6:])
            assert parsed["type"] == name[7:]
            out.append((name[7:], parsed))
    return out


def chunk(delta, finish=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}


def stream(writer, chunks):
    raw = writer.start()
    for item in chunks:
        raw += writer.feed(item)
        if writer.stopped:
            break
    return events_of(raw + writer.end())


def test_text_stream_follows_anthropics_event_sequence():
    events = stream(anthropic_events.EventWriter("served", None), [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
        chunk({"content": "lo"}), chunk({}, "stop"), USAGE])
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["model"] == "served" and start["content"] == [] and start["id"].startswith("msg_")
    assert events[2][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[6][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[6][1]["usage"] == {"output_tokens": 4, "input_tokens": 9}


def test_tool_call_stream_becomes_a_tool_use_block_with_json_deltas():
    events = stream(anthropic_events.EventWriter("served", None), [
        chunk({"content": "Let me check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"), USAGE])
    names = [name for name, _ in events]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert events[5][1] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "call_1", "name": "weather", "input": {}}}
    fragments = [e["delta"]["partial_json"] for _, e in events if e.get("index") == 1
                 and e["type"] == "content_block_delta"]
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_stops_at_a_stop_sequence_split_across_chunks():
    writer = anthropic_events.EventWriter("served", ["###"])
    events = stream(writer, [chunk({"content": "a #"}), chunk({"content": "## b"}),
                             chunk({"content": "never read"})])
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == "a "
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}
    assert delta["usage"]["output_tokens"] == 2  # the chunks read, as no usage chunk came


@pytest.mark.parametrize("error, status, kind", [
    (InvalidRequestError("bad"), 400, "invalid_request_error"),
    (AuthenticationError("who"), 401, "authentication_error"),
    (UpstreamError("no", status=403), 403, "permission_error"),
    (ModelNotFoundError("gone"), 404, "not_found_error"),
    (PayloadTooLargeError("big"), 413, "request_too_large"),
    (RateLimitError("full"), 429, "rate_limit_error"),
    (UpstreamError("boom"), 502, "api_error"),
    (ModelNotReadyError("later"), 503, "overloaded_error"),
])
def test_errors_take_anthropics_envelope_by_status(error, status, kind):
    assert error.status == status
    assert anthropic.error_body(error) == {"type": "error",
                                           "error": {"type": kind, "message": error.message}}


def test_mid_stream_failure_is_an_error_event():
    assert events_of(anthropic_events.error_event(UpstreamError("slot died"))) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "slot died"}})]


def test_structured_output_format_becomes_a_json_schema_response_format():
    schema = {"type": "object", "properties": {"color": {"type": "string"}}}
    body = anthropic.chat_body(request(
        messages=[{"role": "user", "content": "A color?"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"}))
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema}}
    assert "response_format" not in anthropic.chat_body(request(
        messages=[{"role": "user", "content": "Hi"}], output_config={"effort": "high"}))
