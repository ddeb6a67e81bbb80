"""Upstream answers that are broken in every way a relay can meet, through the real app.

Whatever an upstream or an adapter does, the client gets a typed error in the OpenAI
envelope: a 502 before the first byte, or an error event and `[DONE]` after it, and the
access log says why. Never a 500, never a truncated body, never garbage relayed.
"""

from __future__ import annotations

import json
import logging

import pytest

from support.vendor_fakes import InProcessGateway, Reply, sse

KEY = "sk-test-upstream"
OK_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "up",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}


def anthropic_events(*events):
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [],
    "model": "claude-x", "stop_reason": None, "usage": {"input_tokens": 9, "output_tokens": 1}}}
TEXT_BLOCK = {"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}


def delta(text, index=0):
    return {"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}


@pytest.fixture(scope="module")
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "claude", "engine": "openai", "vendor": "anthropic", "base_url": fake.url + "/v1",
         "upstream_model": "claude-x", "api_key": KEY},
        # One try and no cool-down, so each scripted reply meets exactly one request.
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY,
         "retries": {"attempts": 1}, "cooldown": {"failures": 1000}},
    ]})
    yield gw
    gw.close()


def assert_envelope(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def assert_ends_with_error_event(events):
    """The stream's last two events: an error envelope, then [DONE]."""
    assert events[-1] == "[DONE]", events
    assert isinstance(events[-2], dict) and set(events[-2]["error"]) == {
        "message", "type", "param", "code"}, events
    return events[-2]["error"]


# -- an adapter meeting an answer it does not expect ------------------------------------


@pytest.mark.parametrize("bad_event", [
    delta("!", index="zero"),  # index not an integer
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": "lots"},
])
def test_adapter_failing_mid_stream_ends_with_error_event_and_is_logged(
        fake, gateway, caplog, bad_event):
    caplog.set_level(logging.INFO)
    fake.script(Reply(events=anthropic_events(MESSAGE_START, TEXT_BLOCK, delta("Hello"),
                                              bad_event, {"type": "message_stop"})))
    response, events = gateway.stream("claude")
    assert response.status_code == 200
    assert events[1]["choices"][0]["delta"]["content"] == "Hello" or any(
        isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
        == "Hello" for e in events)
    error = assert_ends_with_error_event(events)
    assert error["type"] == "upstream_error" and "claude" in error["message"]
    access = [r.getMessage() for r in caplog.records if r.name == "modelport.access"]
    assert len(access) == 1 and "stream_error=" in access[0], access


def test_adapter_failing_before_the_first_byte_is_a_502(fake, gateway):
    fake.script(Reply(events=anthropic_events(
        {"type": "message_start", "message": "not an object"})))
    response = gateway.chat("claude", stream=True)
    assert_envelope(response, 502)


@pytest.mark.parametrize("answer", [
    {"id": "m", "type": "message", "content": "not a list", "stop_reason": "end_turn",
     "usage": {"input_tokens": 1, "output_tokens": 1}},
    {"id": "m", "type": "message", "content": [{"type": "text", "text": "hi"}],
     "stop_reason": "end_turn", "usage": {"input_tokens": "many", "output_tokens": None}},
])
def test_adapter_failing_on_a_whole_answer_is_a_502(fake, gateway, answer):
    fake.script(Reply(json=answer))
    error = assert_envelope(gateway.chat("claude"), 502)
    assert "claude" in error["message"]


# -- upstream 200s that are not OpenAI answers ---------------------------------------------


@pytest.mark.parametrize("reply", [
    Reply(raw=b"\x00\xffgarbage"),
    Reply(raw=b"<html><body>Welcome to nginx!</body></html>"),
    Reply(raw=b'data: {"choices": []}\n\ndata: [DONE]\n\n', content_type="text/event-stream"),
    Reply(raw=b'["a list, not an object"]', content_type="application/json"),
])
def test_a_200_that_is_not_a_json_object_is_a_502(fake, gateway, reply):
    fake.script(reply)
    error = assert_envelope(gateway.chat("remote"), 502)
    assert error["code"] == "malformed_upstream_response"


@pytest.mark.parametrize("bad", [
    b"data: {not json}\n\n",
    b'data: {"choices": [{"delta": {"content": "\xff\xfe"}}]}\n\n',  # not UTF-8
    b"<html>oops</html>\n\n",
    b"data: [1, 2]\n\n",
])
def test_malformed_stream_events_are_not_relayed(fake, gateway, bad):
    good = sse(OK_CHUNK, done=False)
    fake.script(Reply(events=good + [bad] + sse(OK_CHUNK)))
    response = gateway.chat("remote", stream=True)
    assert response.status_code == 200
    raw = response.content
    assert bad.rstrip(b"\n") not in raw.split(b"\n")  # never relayed as an event
    raw.decode("utf-8")  # the client's parser never sees bytes that are not UTF-8
    events = [json.loads(line[5:]) if line[5:].strip() != b"[DONE]" else "[DONE]"
              for line in raw.split(b"\n") if line.startswith(b"data:")]
    assert events[0]["choices"][0]["delta"]["content"] == "Hi"
    error = assert_ends_with_error_event(events)
    assert error["code"] == "malformed_upstream_response"


def test_multi_line_and_comment_events_of_a_remote_upstream_pass(fake, gateway):
    chunk = json.dumps(OK_CHUNK)
    events = [b": keep-alive comment\n\n",
              f"event: message\nid: 1\ndata: {chunk}\n\n".encode()] + sse(OK_CHUNK)
    fake.script(Reply(events=events))
    response, parsed = gateway.stream("remote")
    assert response.status_code == 200 and parsed[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in parsed)


# -- what the client is told of an upstream's own error status ------------------------------


@pytest.mark.parametrize("status", [500, 501, 502, 520])
def test_an_upstream_5xx_reaches_the_client_as_502(fake, gateway, status):
    fake.script(Reply(status=status, json={"error": {"message": "boom", "type": "server_error"}}))
    error = assert_envelope(gateway.chat("remote"), 502)
    assert f"HTTP {status}" in error["message"] and "boom" in error["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_the_upstream_refusing_our_key_is_a_502_saying_so(fake, gateway, status):
    fake.script(Reply(status=status, json={"error": {"message": "bad key",
                                                     "type": "invalid_request_error"}}))
    error = assert_envelope(gateway.chat("remote"), 502)
    assert error["code"] == "upstream_auth_failed"
    assert "upstream refused the API key configured" in error["message"]


# -- one access log line per request, whatever its fate ------------------------------------


def access_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "modelport.access"]


def test_every_request_gets_one_access_line(fake, caplog):
    caplog.set_level(logging.INFO)
    gw = InProcessGateway({"server": {"api_keys": ["k1"]}, "models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1"}]})
    try:
        assert gw.call("GET", "/v1/models").status_code == 401
        assert gw.call("GET", "/v1/nowhere", headers={"Authorization": "Bearer k1"}
                       ).status_code == 404
        fake.script(Reply(events=sse(OK_CHUNK, done=False)))  # closes without [DONE]
        gw.call("POST", "/v1/chat/completions", headers={"Authorization": "Bearer k1"},
                json={"model": "remote", "stream": True,
                      "messages": [{"role": "user", "content": "x"}]})
    finally:
        gw.close()
    lines = access_lines(caplog)
    assert len(lines) == 3, lines
    assert "GET /v1/models" in lines[0] and "status=401" in lines[0]
    assert "GET /v1/nowhere" in lines[1] and "status=404" in lines[1]
    assert "status=200" in lines[2] and "stream_error=UpstreamError" in lines[2]
    assert "client_disconnected" not in lines[2]


def test_an_unexpected_exception_is_a_logged_500_in_the_envelope(fake, gateway, caplog,
                                                                monkeypatch):
    from modelport.routing.registry import ModelRegistry

    def broken(self, name):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ModelRegistry, "for_chat", broken)
    caplog.set_level(logging.INFO)
    error = assert_envelope(gateway.chat("remote"), 500)
    assert error["type"] == "server_error"
    lines = access_lines(caplog)
    assert len(lines) == 1 and "status=500" in lines[0]


def test_debug_logging_shows_request_bodies(fake):
    logger = logging.getLogger("modelport")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        gw = InProcessGateway({"models": [
            {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1"}]})
        fake.script(Reply(json={"choices": []}))
        gw.chat("remote", content="the secret recipe")
        gw.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert any("the secret recipe" in r.getMessage() for r in records)
