"""Reading tool calls out of generated text while it streams (Hermes and Llama 3 forms)."""

from __future__ import annotations

import json

import pytest

from modelport.tools.calls import (
    CallArguments,
    CallStart,
    Content,
    JsonValueEnd,
    ToolCallStream,
    collect,
    delta_of,
)

NAMES = frozenset({"get_weather", "get_time"})
TWO_CALLS = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"city": "Rome, \\"IT\\""}}\n'
    "</tool_call>\n")


def run(pieces, names=NAMES):
    parser = ToolCallStream(names)
    events = []
    for piece in pieces:
        events += parser.push(piece)
    return events + parser.finish()


def split(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_hermes_calls_come_out_the_same_however_the_text_is_cut(size):
    content, calls = collect(run(split(TWO_CALLS, size)))
    assert content.strip() == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": 'Rome, "IT"'}
    assert len({c["id"] for c in calls}) == 2 and all(c["id"].startswith("call_") for c in calls)


def test_a_call_starts_with_its_name_before_any_argument_fragment():
    events = run(split(TWO_CALLS, 3))
    calls = [e for e in events if not isinstance(e, Content)]
    assert isinstance(calls[0], CallStart) and calls[0].index == 0
    fragments = [e for e in calls if isinstance(e, CallArguments) and e.index == 0]
    assert len(fragments) > 3  # streamed as it arrives, not held to the end
    assert delta_of(calls[0]) == {"index": 0, "id": calls[0].id, "type": "function",
                                  "function": {"name": "get_weather", "arguments": ""}}
    assert delta_of(fragments[0]) == {"index": 0, "function": {"arguments": fragments[0].text}}


def test_llama3_json_answer_is_a_call_with_parameters():
    content, calls = collect(run(split('{"name": "get_time", "parameters": {"city": "Oslo"}}', 4)))
    assert content == ""
    assert calls[0]["function"]["name"] == "get_time"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}


def test_json_answers_that_are_not_calls_stay_content():
    assert collect(run(['{"answer": 42}'])) == ('{"answer": 42}', [])
    assert collect(run(['{"name": "unknown_tool", "arguments": {}}']))[1] == []


def test_text_that_only_looks_like_the_marker_is_kept():
    assert collect(run(["a <b> c <tool", "ing> d"])) == ("a <b> c <tooling> d", [])


def test_a_block_that_is_not_json_stays_content_and_the_rest_goes_on():
    content, calls = collect(run(["Hi <tool_call> not json </tool_call> bye"]))
    assert calls == [] and content.startswith("Hi") and content.endswith("bye")


def test_arguments_before_the_name_are_read_when_the_block_closes():
    block = '<tool_call>{"arguments": {"city": "Nice"}, "name": "get_weather"}</tool_call>'
    _, calls = collect(run(split(block, 6)))
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Nice"}


def test_a_call_is_complete_where_its_arguments_end():
    parser = ToolCallStream(NAMES)
    events = parser.push('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert not parser.call_complete
    events += parser.push('ris"} and then some rambling')
    assert parser.call_complete
    content, calls = collect(events + parser.finish())
    assert calls[0]["function"]["arguments"] == '{"city": "Paris"}'
    assert content == "and then some rambling"


def test_a_call_cut_short_keeps_what_arrived():
    _, calls = collect(run(['<tool_call>{"name": "get_weather", "arguments": {"city": "Par']))
    assert calls[0]["function"]["arguments"] == '{"city": "Par'


def test_json_value_end_knows_strings_and_nesting():
    scanner = JsonValueEnd()
    assert scanner.feed('{"a": "}", "b": [1, {"c": "\\""}]') is None
    assert scanner.feed("} tail") == 1 and scanner.done


def test_a_llama3_call_is_complete_when_its_object_closes():
    parser = ToolCallStream(NAMES)
    events = parser.push('{"name": "get_time", "parameters": {"city"')
    assert not parser.call_complete
    events += parser.push(': "Oslo"}} and more')
    assert parser.call_complete
    content, calls = collect(events + parser.finish())
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert content == "and more"
