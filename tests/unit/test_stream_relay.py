from __future__ import annotations

import asyncio

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
