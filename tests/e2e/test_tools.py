"""Tool calling through the official openai SDK against the real session server: the
default GGUF model (llama.cpp) and a Hugging Face checkpoint (transformers), both with
the built-in chatml-tools template; and a model whose template cannot express tools."""

from __future__ import annotations

import json

import openai
import pytest

from support.models import CHAT, HF_TOOLS, TINY

pytestmark = pytest.mark.e2e

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
BOTH_ENGINES = pytest.mark.parametrize("model", [CHAT, HF_TOOLS])


def _streamed(stream) -> tuple[list[dict], dict[int, dict], str | None]:
    """Raw tool-call deltas, the calls they assemble into, and the finish reason."""
    deltas, calls, finish = [], {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                deltas.append(delta.model_dump())
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
            finish = choice.finish_reason or finish
    return deltas, calls, finish


@BOTH_ENGINES
def test_required_tool_choice_yields_a_call_with_json_arguments(client, model):
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER, TIME], tool_choice="required",
        max_tokens=48, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name in ("get_weather", "get_time")
    assert isinstance(json.loads(call.function.arguments), dict)
    assert choice.message.content is None


@BOTH_ENGINES
def test_named_tool_choice_streams_id_and_name_first_then_argument_fragments(client, model):
    stream = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER, TIME], max_tokens=48, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, stream=True)
    deltas, calls, finish = _streamed(stream)
    assert finish == "tool_calls"
    first = deltas[0]
    assert first["index"] == 0 and first["id"] and first["type"] == "function"
    assert first["function"]["name"] == "get_time"
    assert all(d["id"] is None and d["function"]["name"] is None for d in deltas[1:])
    assert len(deltas) > 2  # arguments arrive in fragments, not in one piece
    assert calls[0]["name"] == "get_time"
    assert "city" in json.loads(calls[0]["arguments"])


@BOTH_ENGINES
def test_round_trip_with_a_tool_result_answers_in_text(client, model):
    first = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = QUESTION + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id,
         "content": json.dumps({"city": "Paris", "temperature_c": 21, "sky": "sunny"})},
    ]
    second = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=32,
        temperature=0)
    assert second.choices[0].message.content.strip()
    # The call and its result were rendered into the prompt, not dropped.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 20


@BOTH_ENGINES
def test_auto_tool_choice_answers_with_text_or_a_well_formed_call(client, model):
    stream = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER], tool_choice="auto", max_tokens=32,
        temperature=0, stream=True)
    deltas, calls, finish = _streamed(stream)
    if calls:
        assert finish == "tool_calls" and calls[0]["name"] == "get_weather"
    else:
        assert finish in ("stop", "length")


def test_parallel_tool_calls_false_gives_exactly_one_call(client):
    reply = client.chat.completions.create(
        model=CHAT, messages=QUESTION, tools=[WEATHER, TIME], tool_choice="required",
        parallel_tool_calls=False, max_tokens=64, temperature=0)
    assert len(reply.choices[0].message.tool_calls) == 1


def test_model_whose_template_cannot_express_tools_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY, messages=QUESTION, tools=[WEATHER],
                                       max_tokens=8)
    message = caught.value.body["message"]
    assert f"model '{TINY}' cannot call tools" in message and "chatml-tools" in message
    assert caught.value.body["param"] == "tools"
    # With tool_choice none the tools are only context: the model answers.
    reply = client.chat.completions.create(model=TINY, messages=QUESTION, tools=[WEATHER],
                                           tool_choice="none", max_tokens=8)
    assert reply.choices[0].message.content
