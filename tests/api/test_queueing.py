"""The gateway's per-model queue in-process over ASGI, in front of a scripted online API
that runs one request at a time (max_concurrency 1): requests beyond it wait and say how
long, a full queue or a wait past queue_timeout_s is 429 with Retry-After, a request's
asked class orders the queue, and an unknown class is a 400."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from support.vendor_fakes import Reply, VendorFake

ANSWER = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def slow(seconds: float) -> Reply:
    return Reply(json=ANSWER, hang=seconds)


@pytest.fixture
def upstream():
    fake = VendorFake().start()
    yield fake
    fake.stop()


def run(upstream: VendorFake, scenario, **model):
    """`scenario(client, state)` against a gateway serving "one" (one request at a time)."""
    config = parse_config({"models": [{
        "name": "one", "engine": "openai", "base_url": upstream.url + "/v1",
        "max_concurrency": 1, **model}]})
    state = build_state(config)

    async def go():
        transport = httpx.ASGITransport(app=build_app(state))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                         timeout=30) as client:
                return await scenario(client, state)
        finally:
            for provider in state.clients.values():
                await provider.close()

    return asyncio.run(go())


def chat(text: str = "x", **fields):
    return {"model": "one", "messages": [{"role": "user", "content": text}], **fields}


def test_requests_beyond_the_slots_wait_and_say_how_long(upstream):
    upstream.script(slow(0.3), slow(0.3), slow(0.3))

    async def scenario(client, state):
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat())
                                         for _ in range(3)))
        return answers, state.registry.get("one").queue.view()

    answers, view = run(upstream, scenario)
    assert [a.status_code for a in answers] == [200, 200, 200]
    waited = sorted(int(a.headers.get("x-modelport-queue-ms", 0)) for a in answers)
    assert waited[0] == 0  # the first one found the slot free: no header
    assert 250 <= waited[1] < 600 and 550 <= waited[2] < 1200
    assert view["length"] == 0 and view["running"] == 0


def test_a_full_queue_is_429_with_retry_after(upstream):
    upstream.script(slow(0.3))

    async def scenario(client, _state):
        first = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat()))
        await asyncio.sleep(0.1)
        second = await client.post("/v1/chat/completions", json=chat())
        return await first, second

    first, second = run(upstream, scenario, max_queue=0)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "queue_full"
    assert int(second.headers["Retry-After"]) >= 1


def test_a_request_that_waits_past_queue_timeout_is_429(upstream):
    upstream.script(slow(1.0))

    async def scenario(client, _state):
        first = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat()))
        await asyncio.sleep(0.1)
        second = await client.post("/v1/chat/completions", json=chat())
        return await first, second

    first, second = run(upstream, scenario, queue_timeout_s=0.3)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "queue_timeout"
    assert "Retry-After" in second.headers


def test_a_higher_class_asked_for_goes_first(upstream):
    upstream.script(slow(0.4), slow(0), slow(0), slow(0))

    async def scenario(client, _state):
        running = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat("run")))
        await asyncio.sleep(0.1)
        later = [asyncio.ensure_future(client.post(
            "/v1/chat/completions", json=chat("batch", metadata={"priority": "batch"})))]
        await asyncio.sleep(0.05)
        later.append(asyncio.ensure_future(client.post("/v1/chat/completions", json=chat("std"))))
        await asyncio.sleep(0.05)
        later.append(asyncio.ensure_future(client.post(
            "/v1/chat/completions", json=chat("person"),
            headers={"x-modelport-priority": "interactive"})))
        return [await running] + [await request for request in later]

    answers = run(upstream, scenario)
    assert all(a.status_code == 200 for a in answers)
    order = [r.body["messages"][0]["content"] for r in upstream.requests]
    assert order == ["run", "person", "std", "batch"]


def test_an_unknown_class_is_400(upstream):
    async def scenario(client, _state):
        return (await client.post("/v1/chat/completions", json=chat(),
                                  headers={"x-modelport-priority": "urgent"}),
                await client.post("/v1/chat/completions",
                                  json=chat(metadata={"priority": "999"})))

    for answer in run(upstream, scenario):
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_priority"


def test_metrics_show_each_models_queue(upstream):
    from prometheus_client.parser import text_string_to_metric_families

    upstream.script(slow(0.4), slow(0))

    async def scenario(client, _state):
        running = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat()))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat()))
        await asyncio.sleep(0.1)
        during = (await client.get("/metrics")).text
        await running, await waiting
        return during, (await client.get("/metrics")).text

    def samples(text: str) -> dict[str, float]:
        return {sample.name: sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.labels.get("model") == "one"}

    during, after = (samples(text) for text in run(upstream, scenario))
    assert during["modelport_requests_queued"] == 1
    assert during["modelport_queue_oldest_wait_seconds"] >= 0.05
    assert after["modelport_requests_queued"] == 0
    assert after["modelport_queue_waits_total"] == 1
    assert 0.2 <= after["modelport_queue_wait_seconds_total"] < 1.0
    assert after["modelport_queue_refused_total"] == 0
