"""Assembling a non-streaming answer from the chunks of a stream (llama.cpp workers)."""

from __future__ import annotations

import asyncio
import json

import pytest

from modelport.errors import MalformedUpstreamError, UpstreamError
from modelport.providers.stream_assembly import assemble


def events(*chunks, done=True):
    out = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return out + ([b"data: [DONE]\n\n"] if done else [])


async def _iterate(items):
    for item in items:
        yield item


def run(items, chat=True):
    return asyncio.run(assemble(_iterate(items), chat=chat, label="m"))


def chunk(choices, **extra):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": choices, **extra}


def test_chat_text_choices_finish_reasons_and_usage():
    answer = run(events(
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        chunk([{"index": 0, "delta": {"content": "Hel"}}, {"index": 1, "delta": {"content": "A"}}]),
        chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"},
               {"index": 1, "delta": {}, "finish_reason": "length"}]),
        chunk([], usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ))
    assert answer["object"] == "chat.completion" and answer["id"] == "c1"
    assert answer["created"] == 7 and answer["model"] == "m"
    assert [c["message"]["content"] for c in answer["choices"]] == ["Hello", "A"]
    assert [c["finish_reason"] for c in answer["choices"]] == ["stop", "length"]
    assert answer["usage"]["total_tokens"] == 7


def test_tool_call_fragments_are_merged_by_index():
    answer = run(events(
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1",
               "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0,
               "function": {"arguments": '{"city": '}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0,
               "function": {"arguments": '"Paris"}'}}]}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ))
    message = answer["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_legacy_completion_text_and_logprobs():
    answer = run(events(
        {"id": "x", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "text": "Once", "logprobs": {"tokens": ["Once"],
                                                              "token_logprobs": [-0.1]}}]},
        {"id": "x", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "text": " upon", "finish_reason": "length",
                      "logprobs": {"tokens": [" upon"], "token_logprobs": [-0.2]}}]},
    ), chat=False)
    choice = answer["choices"][0]
    assert answer["object"] == "text_completion" and choice["text"] == "Once upon"
    assert choice["logprobs"]["tokens"] == ["Once", " upon"]
    assert choice["finish_reason"] == "length"


def test_an_error_chunk_is_an_upstream_error():
    with pytest.raises(UpstreamError, match="slot failed"):
        run(events(chunk([{"index": 0, "delta": {"content": "a"}}]),
                   {"error": {"message": "slot failed", "type": "server_error"}}))


@pytest.mark.parametrize("items", [
    events(chunk([{"index": 0, "delta": {"content": "cut"}}]), done=False),
    [b"data: {broken\n\n", b"data: [DONE]\n\n"],
])
def test_an_unfinished_or_malformed_stream_is_a_502(items):
    with pytest.raises(MalformedUpstreamError):
        run(items)


def test_the_null_event_that_opens_a_several_prompt_stream_is_skipped():
    answer = run([b"data: null\n\n"] + events(
        {"id": "x", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 1, "text": "b"}]},
        {"id": "x", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "text": "a", "finish_reason": "length"}]}), chat=False)
    assert [c["text"] for c in answer["choices"]] == ["a", "b"]
