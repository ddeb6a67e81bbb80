"""tool_choice required/named on llama.cpp: the grammar sent, and the worker's content
stream turned into OpenAI tool-call deltas (streamed, and assembled for non-streaming)."""

from __future__ import annotations

import asyncio
import json

import orjson

from modelport.protocol import ChatCompletionRequest
from modelport.providers.forced_tools import as_tool_calls, forced_body, forced_function_names
from modelport.providers.stream_assembly import assemble
from modelport.tools.support import HERMES, JSON

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def request(**fields):
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}],
         "tools": [WEATHER, TIME], **fields})


def test_only_required_and_named_choices_are_forced():
    assert forced_function_names(request()) is None
    assert forced_function_names(request(tool_choice="auto")) is None
    assert forced_function_names(request(tool_choice="none")) is None
    assert forced_function_names(request(tool_choice="required")) == ["get_weather", "get_time"]
    named = request(tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert forced_function_names(named) == ["get_time"]


def test_forced_body_keeps_the_tools_and_allows_one_call_in_the_templates_format():
    body = {"model": "m", "tools": [WEATHER, TIME], "tool_choice": "required",
            "parallel_tool_calls": True}
    sent = forced_body(body, ["get_weather", "get_time"], HERMES)
    assert sent["tools"] == body["tools"] and sent["tool_choice"] == "none"
    assert "parallel_tool_calls" not in sent
    grammar = sent["grammar"]
    assert grammar.startswith("%llguidance {}\nstart: \"<tool_call>\\n\" call")
    schema = json.loads(grammar.split("call: %json ", 1)[1])
    first, second = schema["anyOf"]
    assert first["properties"]["name"] == {"const": "get_weather"}
    # A schema that names its keys allows no others; a tool without one takes {}.
    assert first["properties"]["arguments"]["additionalProperties"] is False
    assert second["properties"]["arguments"] == {
        "type": "object", "additionalProperties": False, "properties": {}}
    bare = json.loads(forced_body(body, ["get_time"], JSON)["grammar"].split("%json ", 1)[1])
    assert set(bare["properties"]) == {"name", "parameters"}


def sse(chunks):
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def chunk(delta, finish=None):
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


WORKER_STREAM = sse([
    chunk({"role": "assistant", "content": None}),
    *[chunk({"content": piece}) for piece in
      ["<tool_", "call>\n{\"name\": ", "\"get_weather\", ", "\"arguments\": {\"ci",
       "ty\": \"Pa", "ris\"}}\n</tool_call>"]],
    chunk({}, "stop"),
    {"id": "x", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9,
                                         "total_tokens": 14}},
])


async def _iterate(items):
    for item in items:
        yield item


async def _rewritten():
    return [event async for event in as_tool_calls(_iterate(WORKER_STREAM), ["get_weather"])]


def test_content_becomes_tool_call_deltas_in_openais_order():
    events = asyncio.run(_rewritten())
    assert events[-1] == b"data: [DONE]\n\n"
    payloads = [orjson.loads(e[6:]) for e in events[:-1]]
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert deltas[0] == {"role": "assistant"}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert "".join(c["function"]["arguments"] for c in calls[1:]) == '{"city": "Paris"}'
    assert not any("content" in d for d in deltas)
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"]["total_tokens"] == 14


def test_the_assembled_answer_carries_the_call():
    async def run():
        events = as_tool_calls(_iterate(WORKER_STREAM), ["get_weather"])
        return await assemble(events, chat=True, label="m")

    answer = asyncio.run(run())
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_choices_of_n_greater_than_one_are_read_apart():
    def piece(index, text, finish=None):
        return {"id": "x", "choices": [{"index": index, "delta": {"content": text},
                                        "finish_reason": finish}]}

    stream = sse([piece(0, '<tool_call>{"name": "get_weather", "arguments": {"city": "A'),
                  piece(1, '<tool_call>{"name": "get_weather", "arguments": {"city": "B'),
                  piece(0, '"}}</tool_call>', "stop"), piece(1, '"}}</tool_call>', "stop")])

    async def run():
        events = as_tool_calls(_iterate(stream), ["get_weather"])
        return await assemble(events, chat=True, label="m")

    choices = asyncio.run(run())["choices"]
    assert [json.loads(c["message"]["tool_calls"][0]["function"]["arguments"])["city"]
            for c in choices] == ["A", "B"]
    assert {c["finish_reason"] for c in choices} == {"tool_calls"}
