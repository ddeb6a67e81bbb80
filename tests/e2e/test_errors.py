"""Every error status the gateway promises, in the OpenAI envelope, from a real server."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from support.models import CHAT, EMBED, TINY
from support.server import slot_held

pytestmark = pytest.mark.e2e


def post(server, path, body=None, content=None, timeout=60, **kw):
    return httpx.post(server.base_url + path, json=body, content=content, timeout=timeout, **kw)


def assert_envelope(response, status, kind=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if kind:
        assert error["type"] == kind
    if code:
        assert error["code"] == code
    return error


def chat(model=CHAT, **fields):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize("body, param", [
    (chat(messages=[]), "messages"),
    (chat(max_tokens=-1), "max_tokens"),
    (chat(max_tokens="ten"), "max_tokens"),
    (chat(temperature=5), "temperature"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages"),
    (chat(messages="hello"), "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    (chat(response_format={"type": "xml"}), "response_format"),
])
def test_invalid_bodies_are_400_naming_the_param(server, body, param):
    error = assert_envelope(post(server, "/chat/completions", body), 400, "invalid_request_error")
    assert error["param"].startswith(param)


def test_malformed_json_is_400(server):
    assert_envelope(post(server, "/chat/completions", content=b'{"model": '), 400)
    assert_envelope(post(server, "/chat/completions", content=b"[1, 2]"), 400)


def test_unknown_fields_are_accepted(server):
    response = post(server, "/chat/completions", chat(max_tokens=3, some_future_field={"a": 1}))
    assert response.status_code == 200


def test_unknown_model_is_404(server):
    error = assert_envelope(post(server, "/chat/completions", chat(model="gpt-17")), 404,
                            code="model_not_found")
    assert "gpt-17" in error["message"]


def test_embedding_model_on_chat_route_is_400(server):
    assert_envelope(post(server, "/chat/completions", chat(model=EMBED)), 400)


def test_oversize_body_is_413(server):
    huge = chat(messages=[{"role": "user", "content": "x" * (2 * 1024 * 1024)}])
    assert_envelope(post(server, "/chat/completions", huge), 413)


def test_prompt_longer_than_context_is_400_not_truncated(server):
    long_prompt = "hello world " * 2000
    error = assert_envelope(
        post(server, "/chat/completions", chat(messages=[{"role": "user", "content": long_prompt}])),
        400, code="context_length_exceeded")
    assert "context" in error["message"]


def test_completion_token_ids_outside_the_vocabulary_are_400(server):
    """Negative ids are refused by the gateway; ids past the vocabulary by llama.cpp, whose
    500 says invalid_request_error: both reach the client as its own 400."""
    for prompt in ([[1, 2], [-5, 3]], [63012, 2**50]):
        error = assert_envelope(post(server, "/completions", {"model": CHAT, "prompt": prompt,
                                                              "max_tokens": 2}), 400)
        assert "token" in error["message"].lower(), error


def test_embedding_input_longer_than_model_limit_is_400(server):
    assert_envelope(post(server, "/embeddings", {"model": EMBED, "input": "word " * 2000}), 400,
                    code="context_length_exceeded")


def test_unreachable_upstream_is_502(server):
    assert_envelope(post(server, "/chat/completions", chat(model="dead-upstream")), 502)


def test_upstream_timeout_is_504(server):
    started = time.monotonic()
    assert_envelope(post(server, "/chat/completions", chat(model="slow-upstream")), 504)
    assert time.monotonic() - started < 10


def test_upstream_error_keeps_its_status_and_retry_after(server):
    response = post(server, "/chat/completions", chat(model="limited-upstream"))
    error = assert_envelope(response, 429)
    assert error["message"] == "slow down"
    assert response.headers["retry-after"] == "7"


def test_upstream_error_through_a_chain_keeps_status(server):
    long_prompt = "hello world " * 2000
    assert_envelope(post(server, "/chat/completions", chat(
        model="chained", messages=[{"role": "user", "content": long_prompt}])), 400)


def test_stream_failing_after_start_ends_with_error_event_and_done(server):
    with httpx.stream("POST", server.base_url + "/chat/completions", timeout=30,
                      json=chat(model="broken-upstream", stream=True)) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "partial"
    assert "error" in json.loads(events[-2])


def test_full_queue_is_429_with_retry_after(server):
    # TINY has one slot and no queue: while one long stream runs, the next request is refused.
    with slot_held(server, TINY):
        started = time.monotonic()
        response = post(server, "/chat/completions", chat(model=TINY, max_tokens=3))
        assert time.monotonic() - started < 2, "a full queue must answer at once"
        assert_envelope(response, 429, "rate_limit_error")
        assert int(response.headers["retry-after"]) >= 1


def test_unknown_route_and_method_get_envelopes(server):
    assert_envelope(httpx.get(server.base_url + "/nothing-here"), 404)
    assert_envelope(httpx.get(server.base_url + "/chat/completions"), 405)
