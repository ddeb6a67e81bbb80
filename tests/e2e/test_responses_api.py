"""The OpenAI Responses API (`client.responses`) against a real gateway and the real default
GGUF model, driven by the official SDK: text, streams, a forced function call and its
round trip, previous_response_id, and errors."""

from __future__ import annotations

import json

import openai
import pydantic
import pytest

from support.chat_upstream import ENDLESS, ChatUpstream
from support.models import CHAT, TINY
from support.server import ModelportServer, slot_held

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True,
}


def test_create_answers_with_output_text_and_usage(client):
    response = client.responses.create(model=CHAT, input="What is the capital of France?",
                                       instructions="Answer in one short sentence.",
                                       max_output_tokens=40, temperature=0)
    assert response.id.startswith("resp_") and response.model == CHAT
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_max_output_tokens_makes_the_response_incomplete(client):
    response = client.responses.create(model=CHAT, input="Write a long story about a cat.",
                                       max_output_tokens=3, temperature=0)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_stream_deltas_add_up_to_the_final_response(client):
    with client.responses.stream(model=CHAT, input="Say hello.", max_output_tokens=100,
                                 temperature=0) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    # The last event carries the whole response, completed or cut by max_output_tokens
    # (the SDK's get_final_response() needs response.completed: see the tool-call stream).
    assert kinds[-1] in ("response.completed", "response.incomplete")
    final = events[-1].response
    for kind in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert kind in kinds
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text.strip() and text == final.output_text
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "get_weather"}])
def test_a_forced_function_call_comes_back_as_a_function_call_item(client, tool_choice):
    response = client.responses.create(model=CHAT, input="What is the weather in Paris?",
                                       tools=[WEATHER], tool_choice=tool_choice,
                                       max_output_tokens=60, temperature=0)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    assert calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)


def test_a_function_call_streams_its_arguments_and_the_sdk_parses_them(client):
    with client.responses.stream(model=CHAT, input="What is the weather in Rome?",
                                 tools=[WEATHER], tool_choice="required",
                                 max_output_tokens=60, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather"
    assert isinstance(call.parsed_arguments["city"], str)  # strict tool: the SDK parsed it


def test_a_function_result_round_trip_through_previous_response_id(client):
    asked = client.responses.create(model=CHAT, input="What is the weather in Paris?",
                                    tools=[WEATHER], tool_choice="required",
                                    max_output_tokens=60, temperature=0)
    call = next(item for item in asked.output if item.type == "function_call")
    answered = client.responses.create(
        model=CHAT, previous_response_id=asked.id, tools=[WEATHER], max_output_tokens=40,
        temperature=0, tool_choice="none",
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": json.dumps({"city": "Paris", "weather": "sunny, 24 C"})}])
    assert answered.previous_response_id == asked.id
    assert answered.output_text.strip()


def test_previous_response_id_and_retrieve_and_delete(client):
    first = client.responses.create(model=CHAT, input="My name is Ada.", max_output_tokens=20,
                                    temperature=0)
    follow = client.responses.create(model=CHAT, input="What is my name?", max_output_tokens=20,
                                     previous_response_id=first.id, temperature=0)
    assert follow.output_text.strip()
    # The follow-up was answered after the first turn: more input than the question alone.
    assert follow.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(follow.id).output_text == follow.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="Again?", previous_response_id=first.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_errors_are_openai_errors_naming_the_param(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="hi", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="hi", max_output_tokens=0)
    assert caught.value.body["param"] == "max_output_tokens"


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_text_format_gets_a_constrained_parsed_answer(client):
    # The SDK sends text.format json_schema (strict); llama.cpp constrains the output to it.
    response = client.responses.parse(model=CHAT, input="Give the name and age of a person.",
                                      text_format=Person, max_output_tokens=100, temperature=0)
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Person)
    assert json.loads(response.output_text) == response.output_parsed.model_dump()


def test_a_stream_that_breaks_off_ends_with_response_failed(client):
    with client.responses.stream(model="broken-upstream", input="hi") as stream:
        events = list(stream)
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "partial"  # what came before the break reached the client


def test_a_full_model_answers_429(client, server):
    # TINY has one slot and no queue: while a chat stream holds it, a response is refused.
    with slot_held(server, TINY):
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model=TINY, input="hi", max_output_tokens=3)


def test_responses_are_in_the_access_log(client, server):
    response = client.responses.create(model=CHAT, input="Hi", max_output_tokens=2)
    tokens = f"tokens={response.usage.input_tokens}+{response.usage.output_tokens}"
    line = next(line for line in reversed(server.log().splitlines())
                if "POST /v1/responses " in line)
    assert f"model={CHAT} status=200" in line and tokens in line


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    """A gateway in front of an upstream that streams until its client goes away."""
    upstream = ChatUpstream().start()
    gateway = ModelportServer({"models": [{"name": "endless", "engine": "openai",
                                           "base_url": upstream.url}]},
                              tmp_path_factory.mktemp("endless"))
    try:
        gateway.start()
        yield gateway, upstream
    finally:
        gateway.stop()
        upstream.stop()


def test_a_client_leaving_a_stream_stops_the_upstream(endless):
    gateway, upstream = endless
    client = openai.OpenAI(base_url=gateway.base_url, api_key="EMPTY", max_retries=0,
                           timeout=30)
    with client.responses.stream(model="endless", input=f"Talk {ENDLESS}.") as stream:
        deltas = 0
        for event in stream:
            deltas += event.type == "response.output_text.delta"
            if deltas == 3:
                break  # leaving the `with` closes the connection mid-stream
    assert deltas == 3
    assert upstream.dropped.wait(10), "the upstream kept generating for nobody"
