"""Every vendor entry and the Anthropic adapter against a fake that checks the exact request.

The expected path, key header and answer formats come from each vendor's docs (see
support/vendor_fakes.py), not from modelport's vendors file, so a wrong entry fails here.
"""

from __future__ import annotations

import pytest

from modelport.config.vendors import builtin_vendors
from support.vendor_fakes import KEY, VENDORS, InProcessGateway, Reply, streamed_text

NO_STREAM_OPTIONS = {"spark", "baichuan"}  # their docs list no stream_options


@pytest.fixture(scope="module")
def gateway(fake):
    models = []
    for case in VENDORS:
        prefix = case.path[: -len("/chat/completions")]
        models.append({"name": f"m-{case.vendor}", "engine": "openai", "vendor": case.vendor,
                       "base_url": fake.url + prefix, "upstream_model": case.model,
                       "api_key": KEY, "url_params": case.url_params})
    models.append({"name": "claude", "engine": "openai", "vendor": "anthropic",
                   "base_url": fake.url + "/v1", "upstream_model": "claude-sonnet-4-5",
                   "api_key": KEY, "retries": {"attempts": 2, "backoff": 0.01}})
    gw = InProcessGateway({"models": models})
    yield gw
    gw.close()


def check_request(case, recorded, *, stream):
    assert recorded.method == "POST"
    assert recorded.path == case.path
    assert recorded.query == case.query
    header, value = case.auth
    assert recorded.headers[header] == value
    if header != "authorization":
        assert "authorization" not in recorded.headers
    body = recorded.body
    assert body["model"] == case.model
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body[case.limit_field] == 5
    assert {"max_tokens", "max_completion_tokens"} & set(body) == {case.limit_field}
    assert body.get("stream", False) is stream
    if stream:
        assert ("stream_options" in body) is (case.vendor not in NO_STREAM_OPTIONS)


@pytest.mark.parametrize("case", VENDORS, ids=lambda c: c.vendor)
def test_vendor_entry_matches_the_documented_base_url(case):
    assert builtin_vendors()[case.vendor].base_url == case.official_base_url


@pytest.mark.parametrize("case", VENDORS, ids=lambda c: c.vendor)
def test_vendor_chat_sends_the_documented_request_and_maps_the_answer(fake, gateway, case):
    fake.script(Reply(json=case.answer))
    response = gateway.chat(f"m-{case.vendor}", max_completion_tokens=5)
    assert response.status_code == 200, response.text
    check_request(case, fake.last(), stream=False)
    answer = response.json()
    assert answer["model"] == f"m-{case.vendor}"
    assert answer["choices"][0]["message"]["content"] == "Hello there"
    assert answer["usage"]["total_tokens"] == 12
    assert response.headers["x-modelport-model"] == f"m-{case.vendor}"


@pytest.mark.parametrize("case", VENDORS, ids=lambda c: c.vendor)
def test_vendor_stream_is_relayed_in_order_and_ends_with_done(fake, gateway, case):
    fake.script(Reply(events=case.stream))
    response, events = gateway.stream(f"m-{case.vendor}", max_completion_tokens=5)
    assert response.status_code == 200, response.text
    check_request(case, fake.last(), stream=True)
    assert streamed_text(events) == "Hello there"
    assert events[-1] == "[DONE]"
    assert not any("error" in e for e in events if isinstance(e, dict))
    assert {e["model"] for e in events if isinstance(e, dict) and e.get("model")} <= {
        f"m-{case.vendor}"}


@pytest.mark.parametrize("vendor, answer", [
    ("minimax", {"id": "", "choices": None,
                 "base_resp": {"status_code": 1004, "status_msg": "authorization failed"}}),
    ("spark", {"code": 11200, "message": "licence check failed", "sid": "cha000"}),
])
def test_errors_reported_with_a_200_become_502(fake, gateway, vendor, answer):
    fake.script(Reply(json=answer), Reply(json=answer))
    response = gateway.chat(f"m-{vendor}")
    assert response.status_code == 502
    assert response.json()["error"]["code"] in ("1004", "11200")
    fake.script(Reply(json=answer), Reply(json=answer))  # a stream request answered with JSON
    assert gateway.chat(f"m-{vendor}", stream=True).status_code == 502


ANTHROPIC_ANSWER = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hello there"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 3}}


def anthropic_events(*events):
    return [f"event: {e['type']}\ndata: {__import__('json').dumps(e)}\n\n".encode()
            for e in events]


ANTHROPIC_STREAM = anthropic_events(
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                          "content": [], "model": "claude-sonnet-4-5",
                                          "stop_reason": None,
                                          "usage": {"input_tokens": 9, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "text_delta", "text": " there"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
)


def test_anthropic_chat_request_and_answer(fake, gateway):
    fake.script(Reply(json=ANTHROPIC_ANSWER))
    response = gateway.call("POST", "/v1/chat/completions", json={
        "model": "claude", "max_tokens": 5,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    recorded = fake.last()
    assert recorded.path == "/v1/messages"
    assert recorded.headers["x-api-key"] == KEY
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in recorded.headers
    assert recorded.body == {"model": "claude-sonnet-4-5", "system": "Be brief.",
                             "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    answer = response.json()
    assert answer["model"] == "claude" and answer["object"] == "chat.completion"
    assert answer["choices"][0] == {"index": 0, "finish_reason": "stop", "logprobs": None,
                                    "message": {"role": "assistant", "content": "Hello there"}}
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_anthropic_stream_becomes_openai_chunks(fake, gateway):
    fake.script(Reply(events=ANTHROPIC_STREAM))
    response, events = gateway.stream("claude", stream_options={"include_usage": True})
    assert response.status_code == 200
    assert fake.last().body["stream"] is True
    assert streamed_text(events) == "Hello there"
    assert events[-1] == "[DONE]"
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
    assert finishes[-1] == "stop"
    assert events[-2]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_anthropic_overloaded_before_any_text_is_retried(fake, gateway):
    overloaded = anthropic_events({"type": "error", "error": {"type": "overloaded_error",
                                                              "message": "Overloaded"}})
    fake.script(Reply(events=overloaded), Reply(events=ANTHROPIC_STREAM))
    response, events = gateway.stream("claude")
    assert len(fake.requests) == 2
    assert streamed_text(events) == "Hello there" and events[-1] == "[DONE]"


def test_anthropic_529_is_a_503_for_openai_clients(fake, gateway):
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.script(Reply(status=529, json=body), Reply(status=529, json=body))
    response = gateway.chat("claude")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "Overloaded"


def test_anthropic_serves_no_embeddings_or_legacy_completions(gateway):
    assert gateway.call("POST", "/v1/embeddings",
                        json={"model": "claude", "input": "x"}).status_code == 400
    assert gateway.call("POST", "/v1/completions",
                        json={"model": "claude", "prompt": "x"}).status_code == 400
