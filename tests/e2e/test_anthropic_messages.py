"""The official anthropic SDK against a real modelport serving the real default GGUF model:
messages.create, messages.stream (text and a tool call) and messages.count_tokens."""

from __future__ import annotations

import pytest

from support.models import CHAT

WEATHER = {"name": "get_weather", "description": "Get the current weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def claude(server):
    import anthropic

    # The SDK appends /v1/messages itself: its base_url is the server's root.
    return anthropic.Anthropic(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=120)


def test_create_answers_text(claude):
    message = claude.messages.create(
        model=CHAT, max_tokens=24, system="You are a helpful assistant.", extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Name a color."}])
    assert message.type == "message" and message.role == "assistant" and message.model == CHAT
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24


def test_stream_text_matches_the_final_message(claude):
    with claude.messages.stream(model=CHAT, max_tokens=24, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_forced_tool_call(claude):
    message = claude.messages.create(
        model=CHAT, max_tokens=64, tools=[WEATHER], messages=QUESTION,
        tool_choice={"type": "tool", "name": "get_weather"})
    calls = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use" and len(calls) == 1
    assert calls[0].name == "get_weather" and isinstance(calls[0].input, dict)
    assert calls[0].id


def test_tool_result_round_trip(claude):
    """The assistant's tool_use goes back with the tool's result; the model answers on."""
    history = QUESTION + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name":
                                           "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                      "content": [{"type": "text", "text": "Sunny, 21 C"}]}]}]
    answer = claude.messages.create(model=CHAT, max_tokens=24, tools=[WEATHER],
                                    messages=history, tool_choice={"type": "none"})
    assert answer.content[0].type == "text" and answer.content[0].text.strip()
    assert answer.stop_reason in ("end_turn", "max_tokens")
    # the tool result reached the model's prompt: it is longer than the question alone
    alone = claude.messages.count_tokens(model=CHAT, messages=QUESTION, tools=[WEATHER])
    assert answer.usage.input_tokens > alone.input_tokens


def test_streamed_tool_call(claude):
    with claude.messages.stream(model=CHAT, max_tokens=64, tools=[WEATHER], messages=QUESTION,
                                tool_choice={"type": "any"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and kinds[-1] == "message_stop"
    calls = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and calls and calls[0].name == "get_weather"
    assert isinstance(calls[0].input, dict)


@pytest.mark.parametrize("streamed", [False, True])
def test_stop_sequence_ends_the_turn_and_is_named(claude, streamed):
    fields = dict(model=CHAT, max_tokens=40, extra_body={"temperature": 0}, stop_sequences=[" "],
                  messages=[{"role": "user", "content": "Write a sentence about cats."}])
    if streamed:
        with claude.messages.stream(**fields) as stream:
            message = stream.get_final_message()
    else:
        message = claude.messages.create(**fields)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " "
    assert all(" " not in block.text for block in message.content if block.type == "text")


def test_count_tokens_is_exact_for_the_gguf_model(claude):
    fields = dict(model=CHAT, system="Be brief.", messages=QUESTION)
    raw = claude.messages.with_raw_response.count_tokens(**fields)
    count = raw.parse()
    assert raw.headers["x-modelport-token-count"] == "exact"
    answered = claude.messages.create(max_tokens=1, **fields)
    assert count.input_tokens == answered.usage.input_tokens > 0
    # with tools too: the count is of the prompt the model's template renders from them
    with_tools = claude.messages.count_tokens(tools=[WEATHER], **fields)
    answered = claude.messages.create(max_tokens=1, tools=[WEATHER], **fields)
    assert with_tools.input_tokens == answered.usage.input_tokens


def test_errors_reach_the_sdk_as_its_typed_errors(claude):
    import anthropic

    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=QUESTION)
    assert missing.value.body["type"] == "error"
    with pytest.raises(anthropic.BadRequestError) as embedding:
        claude.messages.create(model="all-minilm-l6-v2", max_tokens=5, messages=QUESTION)
    assert embedding.value.body["error"]["type"] == "invalid_request_error"


def test_structured_output_is_constrained_to_the_schema(claude):
    import json

    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 20}},
              "required": ["color"], "additionalProperties": False}
    message = claude.messages.create(
        model=CHAT, max_tokens=40, output_config={"format": {"type": "json_schema",
                                                             "schema": schema}},
        messages=[{"role": "user", "content": "Name a color."}])
    answer = json.loads(message.content[0].text)
    assert list(answer) == ["color"] and isinstance(answer["color"], str)
