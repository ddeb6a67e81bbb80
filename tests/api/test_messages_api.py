"""/v1/messages and /v1/messages/count_tokens through the real app, served by an
OpenAI-compatible (fake) upstream, read by raw HTTP and by the official anthropic SDK."""

from __future__ import annotations

import json

import pytest

from support.vendor_fakes import InProcessGateway, Reply, sse

KEY = "sk-gateway-key"


def chunk(delta, finish=None):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "vendor-id",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "vendor-id",
         "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3,
                                  "total_tokens": 14}}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "vendor-id",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hello there"}}],
          "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}
TOOL_STREAM = sse(
    chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
    chunk({}, "tool_calls"), USAGE)
WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture(scope="module")
def gateway(fake):
    gw = InProcessGateway({"server": {"api_keys": [KEY]}, "models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1",
         "upstream_model": "vendor-id", "retries": {"attempts": 1},
         "cooldown": {"failures": 1000}},
        {"name": "claude", "engine": "openai", "vendor": "anthropic", "api_key": "sk-vendor",
         "base_url": fake.url + "/v1", "upstream_model": "claude-sonnet-4-5",
         "retries": {"attempts": 1}},
    ]})
    yield gw
    gw.close()


def post(gateway, path="/v1/messages", headers=None, **body):
    return gateway.call("POST", path, json=body, headers={"x-api-key": KEY, **(headers or {})})


def message(**fields):
    return {"model": "remote", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hi"}], **fields}


def events_of(text):
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_message_is_translated_to_chat_and_back(gateway, fake):
    fake.script(Reply(json=ANSWER))
    response = post(gateway, headers={"anthropic-version": "2023-06-01"},
                    **message(system="Be brief.", stop_sequences=["\n\nHuman:"],
                              metadata={"user_id": "u1"}))
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "message" and body["model"] == "remote"
    assert body["content"] == [{"type": "text", "text": "Hello there"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 11, "output_tokens": 2}
    assert response.headers["x-modelport-model"] == "remote"
    sent = fake.last().body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}]
    assert sent["model"] == "vendor-id" and sent["max_tokens"] == 50
    assert "stop" not in sent and "metadata" not in sent


def test_stream_is_anthropics_event_sequence(gateway, fake):
    fake.script(Reply(events=sse(chunk({"role": "assistant", "content": ""}),
                                 chunk({"content": "Hel"}), chunk({"content": "lo"}),
                                 chunk({}, "stop"), USAGE)))
    response = post(gateway, **message(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"] == {"output_tokens": 3, "input_tokens": 11}
    assert "data: [DONE]" not in response.text


def test_mid_stream_failure_ends_with_an_error_event(gateway, fake):
    fake.script(Reply(events=sse(chunk({"content": "Hel"}), done=False), drop_after_events=True))
    response = post(gateway, **message(stream=True))
    events = events_of(response.text)
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [name for name, _ in events]


@pytest.mark.parametrize("reply, status, kind", [
    (Reply(status=500, json={"error": {"message": "boom"}}), 502, "api_error"),
    (Reply(status=429, json={"error": {"message": "slow down"}}), 429, "rate_limit_error"),
])
def test_upstream_failures_are_anthropic_errors(gateway, fake, reply, status, kind):
    fake.script(reply)
    response = post(gateway, **message())
    assert response.status_code == status
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind


def test_request_errors_are_anthropic_errors(gateway):
    missing = post(gateway, **{k: v for k, v in message().items() if k != "max_tokens"})
    assert missing.status_code == 400
    assert missing.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": missing.json()["error"]["message"]}}
    assert "max_tokens" in missing.json()["error"]["message"]
    unknown = post(gateway, **message(model="nope"))
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    not_json = gateway.call("POST", "/v1/messages", content=b"{", headers={"x-api-key": KEY})
    assert not_json.status_code == 400 and not_json.json()["type"] == "error"
    wrong_method = gateway.call("GET", "/v1/messages", headers={"x-api-key": KEY})
    assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "error"


def test_auth_takes_x_api_key_or_bearer_and_fails_in_anthropics_envelope(gateway, fake):
    fake.script(Reply(json=ANSWER), Reply(json=ANSWER))
    assert post(gateway, **message()).status_code == 200
    bearer = gateway.call("POST", "/v1/messages", json=message(),
                          headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    for headers in ({}, {"x-api-key": "wrong"}):
        refused = gateway.call("POST", "/v1/messages", json=message(), headers=headers)
        assert refused.status_code == 401
        assert refused.json()["type"] == "error"
        assert refused.json()["error"]["type"] == "authentication_error"
    openai_route = gateway.call("GET", "/v1/models", headers={"x-api-key": "wrong"})
    assert openai_route.status_code == 401 and openai_route.json()["error"]["type"] == (
        "authentication_error") and "code" in openai_route.json()["error"]
    assert gateway.call("GET", "/v1/models", headers={"x-api-key": KEY}).status_code == 200


def test_count_tokens_of_an_online_model_is_an_estimate(gateway):
    short = post(gateway, "/v1/messages/count_tokens",
                 model="remote", messages=[{"role": "user", "content": "Hi"}])
    long = post(gateway, "/v1/messages/count_tokens", model="remote", tools=[WEATHER],
                messages=[{"role": "user", "content": "Hi " * 200}])
    assert short.status_code == 200 and long.status_code == 200
    assert short.headers["x-modelport-token-count"] == "estimate"
    assert 0 < short.json()["input_tokens"] < long.json()["input_tokens"]
    assert list(short.json()) == ["input_tokens"]
    unknown = post(gateway, "/v1/messages/count_tokens", model="nope",
                   messages=[{"role": "user", "content": "Hi"}])
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


def sdk(gateway):
    import anthropic
    import httpx2  # the SDK's own HTTP client package

    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gateway.app),
                              base_url="http://gw")
    return anthropic.AsyncAnthropic(base_url="http://gw", api_key=KEY, http_client=http,
                                    max_retries=0)


def test_sdk_streams_a_tool_call(gateway, fake):
    fake.script(Reply(events=TOOL_STREAM))

    async def run():
        client = sdk(gateway)
        async with client.messages.stream(
                model="remote", max_tokens=50, tools=[WEATHER],
                tool_choice={"type": "tool", "name": "weather"},
                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
            return await stream.get_final_message()

    final = gateway.run(run())
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "weather", {"city": "Paris"})]
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 3
    assert fake.last().body["tool_choice"] == {"type": "function",
                                               "function": {"name": "weather"}}


def test_sdk_raises_its_typed_errors(gateway, fake):
    import anthropic

    fake.script(Reply(status=429, json={"error": {"message": "slow down"}}))

    async def run(**fields):
        return await sdk(gateway).messages.create(**message(**fields))

    with pytest.raises(anthropic.RateLimitError):
        gateway.run(run())
    with pytest.raises(anthropic.NotFoundError):
        gateway.run(run(model="nope"))


def test_an_anthropic_vendor_behind_v1_messages_gets_back_the_request_it_was_sent(gateway, fake):
    """Both directions of the one translation module in a row: Anthropic -> OpenAI chat ->
    Anthropic again, and the vendor's answer back the same way."""
    fake.script(Reply(json={
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "weather",
                     "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 12}}))
    sent = {"model": "claude", "max_tokens": 50, "system": "Be brief.", "tools": [WEATHER],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": [
                             {"type": "tool_use", "id": "toolu_1", "name": "weather",
                              "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [
                             {"type": "tool_result", "tool_use_id": "toolu_1",
                              "content": "sunny"}]}]}
    response = post(gateway, **sent)
    assert response.status_code == 200, response.text
    assert fake.last().body == {**sent, "model": "claude-sonnet-4-5"}
    answer = response.json()
    assert answer["content"] == [{"type": "tool_use", "id": "toolu_9", "name": "weather",
                                  "input": {"city": "Paris"}}]
    assert answer["stop_reason"] == "tool_use" and answer["model"] == "claude"
    assert answer["usage"] == {"input_tokens": 30, "output_tokens": 12}
