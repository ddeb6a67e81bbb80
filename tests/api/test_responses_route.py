"""`/v1/responses` through the real app and a fake OpenAI-compatible upstream: what the
upstream is asked, what the client gets back, kept responses, errors and broken streams."""

from __future__ import annotations

import json
import logging

import pytest

from support.vendor_fakes import InProcessGateway, Reply, sse

KEY = "sk-test-upstream"
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def answer(content="Hello", finish="stop"):
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "vendor-id",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}],
            "usage": USAGE}


def chunk(delta=None, finish=None):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "vendor-id",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
               "model": "vendor-id", "choices": [], "usage": USAGE}


@pytest.fixture(scope="module")
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY,
         "upstream_model": "vendor-id", "retries": {"attempts": 1},
         "cooldown": {"failures": 1000}},
    ]})
    yield gw
    gw.close()


def create(gateway, **fields):
    return gateway.call("POST", "/v1/responses", json={"model": "remote", **fields})


def events_of(response) -> list[dict]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def assert_envelope(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


def test_a_response_is_answered_by_the_chat_path_and_echoes_the_request(gateway, fake):
    fake.script(Reply(json=answer("Hello")))
    response = create(gateway, input="Hi", instructions="Be kind.", max_output_tokens=20,
                      metadata={"ticket": "7"})
    assert response.status_code == 200, response.text
    assert response.headers["x-modelport-model"] == "remote"
    data = response.json()
    assert data["object"] == "response" and data["status"] == "completed"
    assert data["model"] == "remote" and data["metadata"] == {"ticket": "7"}
    assert data["output"][0]["content"][0]["text"] == "Hello"
    assert data["usage"]["total_tokens"] == 7
    sent = fake.last().body
    assert sent["model"] == "vendor-id" and sent["max_tokens"] == 20
    assert sent["messages"] == [{"role": "system", "content": "Be kind."},
                                {"role": "user", "content": "Hi"}]


def test_previous_response_id_continues_the_conversation_and_can_be_retrieved(gateway, fake):
    fake.script(Reply(json=answer("Nice to meet you, Ada.")), Reply(json=answer("Ada.")))
    first = create(gateway, input="I am Ada.").json()
    second = create(gateway, input="Who am I?", previous_response_id=first["id"]).json()
    assert second["previous_response_id"] == first["id"]
    assert fake.last().body["messages"] == [
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "Who am I?"}]
    kept = gateway.call("GET", f"/v1/responses/{second['id']}")
    assert kept.status_code == 200 and kept.json() == second
    deleted = gateway.call("DELETE", f"/v1/responses/{first['id']}")
    assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
    assert_envelope(gateway.call("GET", f"/v1/responses/{first['id']}"), 404, "response_id")
    gone = create(gateway, input="Again?", previous_response_id=first["id"])
    assert assert_envelope(gone, 400, "previous_response_id")["code"] == \
        "previous_response_not_found"


def test_store_false_keeps_nothing(gateway, fake):
    fake.script(Reply(json=answer()))
    data = create(gateway, input="Hi", store=False).json()
    assert data["store"] is False
    assert gateway.call("GET", f"/v1/responses/{data['id']}").status_code == 404


def test_a_stream_is_the_typed_event_sequence_and_is_kept(gateway, fake):
    fake.script(Reply(events=sse(chunk({"role": "assistant", "content": ""}),
                                 chunk({"content": "Hel"}), chunk({"content": "lo"}),
                                 chunk(finish="stop"), USAGE_CHUNK)))
    response = create(gateway, input="Hi", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    assert [e["type"] for e in events][:4] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added"]
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 5
    assert fake.last().body["stream"] is True
    assert gateway.call("GET", f"/v1/responses/{final['id']}").json()["status"] == "completed"


def test_a_stream_the_upstream_cuts_short_ends_with_error_and_response_failed(gateway, fake):
    fake.script(Reply(events=sse(chunk({"content": "Hel"}), done=False), drop_after_events=True))
    response = create(gateway, input="Hi", stream=True)
    events = events_of(response)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert gateway.call("GET", f"/v1/responses/{failed['id']}").status_code == 404


@pytest.mark.parametrize("fields, status, param", [
    ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({"input": "x", "background": True}, 400, "background"),
    ({"input": [{"type": "reasoning", "summary": []}]}, 400, "input[0].type"),
    ({"input": "x", "temperature": 9}, 400, "temperature"),
    ({"input": "x", "model": "nope"}, 404, "model"),
])
def test_bad_requests_get_the_openai_envelope_before_the_upstream_is_asked(
        gateway, fake, fields, status, param):
    fake.script()
    assert_envelope(create(gateway, **fields), status, param)
    assert fake.requests == []


def test_a_body_that_is_not_json_is_a_400(gateway):
    response = gateway.call("POST", "/v1/responses", content=b"{nope",
                            headers={"content-type": "application/json"})
    assert_envelope(response, 400)


def test_an_upstream_failure_before_the_answer_is_a_502_envelope(gateway, fake):
    fake.script(Reply(status=500, json={"error": {"message": "boom"}}))
    assert_envelope(create(gateway, input="Hi"), 502)


def test_tools_reach_the_upstream_in_chat_shape_and_tool_calls_come_back_as_items(gateway, fake):
    tool = {"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    called = answer(None, finish="tool_calls")
    called["choices"][0]["message"]["tool_calls"] = [{
        "id": "call_7", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]
    fake.script(Reply(json=called))
    data = create(gateway, input="Weather in Oslo?", tools=[tool], tool_choice="required").json()
    sent = fake.last().body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": tool["parameters"]}}]
    assert sent["tool_choice"] == "required"
    assert [(item["type"], item["call_id"], item["arguments"]) for item in data["output"]] == [
        ("function_call", "call_7", '{"city":"Oslo"}')]
    fake.script(Reply(events=sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_8", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]}),
        chunk(finish="tool_calls"), USAGE_CHUNK)))
    follow = create(gateway, previous_response_id=data["id"], tools=[tool], stream=True,
                    input=[{"type": "function_call_output", "call_id": "call_7",
                            "output": "cold"}])
    assert fake.last().body["messages"][1:] == [
        {"role": "assistant", "tool_calls": [{"id": "call_7", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "cold"}]
    events = events_of(follow)
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city":"Oslo"}']
    assert events[-1]["response"]["output"][0]["call_id"] == "call_8"


def test_the_route_needs_the_api_key_like_every_v1_route(fake):
    gw = InProcessGateway({"server": {"api_keys": ["sk-gateway-key-1"]}, "models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY}]})
    try:
        fake.script(Reply(json=answer()))
        refused = create(gw, input="Hi")
        assert refused.status_code == 401 and refused.json()["error"]["type"]
        assert fake.requests == []
        allowed = gw.call("POST", "/v1/responses", json={"model": "remote", "input": "Hi"},
                          headers={"Authorization": "Bearer sk-gateway-key-1"})
        assert allowed.status_code == 200, allowed.text
    finally:
        gw.close()


def test_an_upstream_failure_is_noted_in_the_access_log(gateway, fake, caplog):
    fake.script(Reply(status=500, json={"error": {"message": "engine on fire"}}))
    with caplog.at_level(logging.INFO, logger="modelport.access"):
        assert create(gateway, input="Hi").status_code == 502
    line = next(r.getMessage() for r in caplog.records if "/v1/responses" in r.getMessage())
    assert "model=remote status=502" in line and "engine on fire" in line


def test_openapi_describes_the_request_the_route_validates(gateway):
    from modelport.foreign.openai_responses_schema import ResponsesRequest

    document = gateway.call("GET", "/openapi.json").json()
    operation = document["paths"]["/v1/responses"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResponsesRequest"}
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    expected = ResponsesRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document["components"]["schemas"]
    assert schemas["ResponsesRequest"] == {k: v for k, v in expected.items() if k != "$defs"}
    assert {"MessageItem", "FunctionCallItem", "FunctionCallOutputItem", "FunctionTool"} \
        <= set(schemas)
    assert set(document["paths"]["/v1/responses/{response_id}"]) == {"get", "delete"}
