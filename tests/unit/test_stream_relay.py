from __future__ import annotations

import asyncio

import orjson

from modelport.api.stream import ModelRenamer, StreamAccounting, relay_sse, sse_events


class FakeContent:
    def __init__(self, chunks):
        self._chunks = chunks

    async def iter_any(self):
        for chunk in self._chunks:
            yield chunk


class FakeResponse:
    def __init__(self, chunks):
        self.content = FakeContent(chunks)


def collect(aiter):
    async def go():
        return [item async for item in aiter]

    return asyncio.run(go())


def test_events_are_reassembled_across_chunk_boundaries():
    chunks = [b'data: {"a"', b':1}\n', b'\ndata: {"b":2}\n\ndata: [DO', b"NE]\n\n"]
    assert collect(sse_events(FakeResponse(chunks))) == [
        b'data: {"a":1}\n\n', b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]


def test_crlf_framing_is_accepted():
    assert collect(sse_events(FakeResponse([b"data: 1\r\n\r\ndata: 2\r\n\r\n"]))) == [
        b"data: 1\n\n", b"data: 2\n\n"]


USAGE = b'data: {"choices":[],"model":"up","usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
TOKEN = b'data: {"choices":[{"delta":{"content":"x"}}],"model":"up"}\n\n'


def test_usage_event_is_accounted_and_dropped_unless_asked():
    for forward in (False, True):
        accounting = StreamAccounting()
        events = collect(relay_sse(
            sse_events(FakeResponse([TOKEN, USAGE, b"data: [DONE]\n\n"])), forward_usage=forward,
            rename=ModelRenamer("mine"), accounting=accounting, label="m"))
        assert accounting.usage == {"prompt_tokens": 3, "completion_tokens": 4}
        assert accounting.finished
        assert events[0] == TOKEN.replace(b'"up"', b'"mine"')
        assert (len(events) == 3) is forward
        assert events[-1] == b"data: [DONE]\n\n"


def test_stream_cut_without_done_ends_with_error_then_done():
    events = collect(relay_sse(sse_events(FakeResponse([TOKEN])), forward_usage=False,
                               accounting=StreamAccounting(), label="m"))
    assert events[0] == TOKEN
    assert b'"error"' in events[1] and b"before it finished" in events[1]
    assert events[2] == b"data: [DONE]\n\n"


LLAMACPP_OPENING = (b'data: {"choices":[{"finish_reason":null,"index":0,"delta":'
                    b'{"role":"assistant","content":null}}],"model":"m"}\n\n')
PYTHON_OPENING = (b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}'
                  b', "finish_reason": null}], "model": "m"}\n\n')
TOOL_OPENING = (b'data: {"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":'
                b'[{"index":0,"id":"c","function":{"name":"f","arguments":""}}]}}]}\n\n')
NULL_LATER = b'data: {"choices":[{"delta":{"role":"assistant","content":null}}]}\n\n'


def relayed(*events: bytes) -> list[bytes]:
    return collect(relay_sse(sse_events(FakeResponse([*events, b"data: [DONE]\n\n"])),
                             forward_usage=True, accounting=StreamAccounting(), label="m"))


def test_a_null_opening_content_becomes_the_empty_string_openai_sends():
    for opening in (LLAMACPP_OPENING, PYTHON_OPENING):
        events = relayed(opening, TOKEN)
        assert events[0] == opening.replace(b"null}", b'""}', 1)
        assert orjson.loads(events[0][6:])["choices"][0]["delta"]["content"] == ""
        assert events[1] == TOKEN


def test_only_the_first_choice_chunk_is_rewritten_and_tool_call_openings_keep_null():
    assert relayed(TOOL_OPENING)[0] == TOOL_OPENING
    # The hook stops after the first chunk with a choice: later events pass untouched.
    assert relayed(TOKEN, NULL_LATER)[1] == NULL_LATER
    # A usage event without choices does not use up the hook.
    assert relayed(USAGE, LLAMACPP_OPENING)[1] == LLAMACPP_OPENING.replace(b"null}", b'""}', 1)
