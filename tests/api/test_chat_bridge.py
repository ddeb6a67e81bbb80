"""The chat bridge: a route speaking another API is served by the chat path, through the
real app and a real (fake-vendor) upstream.

A probe route stands in for the foreign APIs: it hands a chat body to `bridged_chat` and
writes what came back in a format of its own, so each test sees exactly what a foreign
route would get: parsed answers and chunks, typed errors, and its own stream ending.
"""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from modelport.api.chat_bridge import BridgedAnswer, bridged_chat
from modelport.errors import ModelportError
from support.vendor_fakes import InProcessGateway, Reply, sse

KEY = "sk-test-upstream"


def chunk(content=None, finish=None, model="vendor-id"):
    delta = {"content": content} if content is not None else {}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "vendor-id",
         "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "vendor-id",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hello"}}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


async def probe(request: Request):  # noqa: ANN201
    """Answers `{"kind", ...}` JSON, or a stream of `chunk <json>` lines ending `end`/`failed`."""
    try:
        result = await bridged_chat(request, await request.json())
    except ModelportError as error:
        return JSONResponse({"kind": type(error).__name__, "message": error.message},
                            status_code=error.status)
    if isinstance(result, BridgedAnswer):
        return JSONResponse({"kind": "answer", "payload": result.payload}, headers=result.headers)

    async def events():
        try:
            async for item in result.chunks:
                yield b"chunk " + JSONResponse(item).body + b"\n\n"
        except ModelportError as error:
            yield f"failed {type(error).__name__}\n\n".encode()
            return
        yield b"end\n\n"

    return result.response(events(), end_with=lambda error: b"cut\n\n")


@pytest.fixture(scope="module")
def gateway(fake):
    gw = InProcessGateway({"models": [
        {"name": "remote", "engine": "openai", "base_url": fake.url + "/v1", "api_key": KEY,
         "upstream_model": "vendor-id", "retries": {"attempts": 1},
         "cooldown": {"failures": 1000}},
    ]})
    gw.app.app.app.add_route("/probe", probe, methods=["POST"])  # AccessLog > HotRoutes > app
    yield gw
    gw.close()


def body(**fields):
    return {"model": "remote", "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_whole_answer_is_the_parsed_chat_completion_with_the_served_name(gateway, fake):
    fake.script(Reply(json=ANSWER))
    response = gateway.call("POST", "/probe", json=body(max_tokens=9))
    assert response.status_code == 200
    assert response.json()["kind"] == "answer"
    payload = response.json()["payload"]
    assert payload["model"] == "remote"
    assert payload["choices"][0]["message"]["content"] == "Hello"
    assert response.headers["x-modelport-model"] == "remote"
    sent = fake.last().body
    assert sent["model"] == "vendor-id" and sent["max_tokens"] == 9


def test_stream_yields_chunk_dicts_with_usage_last_even_unasked(gateway, fake):
    fake.script(Reply(events=sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"), USAGE)))
    response = gateway.call("POST", "/probe", json=body(stream=True))
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "end"
    chunks = [json.loads(line.removeprefix("chunk ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hello"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    assert all(c["model"] == "remote" for c in chunks)
    assert fake.last().body["stream_options"] == {"include_usage": True}


def test_stream_cut_short_by_the_upstream_raises_a_typed_error_in_chunks(gateway, fake):
    fake.script(Reply(events=sse(chunk("Hel"), done=False), drop_after_events=True))
    response = gateway.call("POST", "/probe", json=body(stream=True))
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[0].startswith("chunk ")
    assert lines[-1] == "failed UpstreamError"


def test_error_event_sent_by_the_upstream_mid_stream_raises(gateway, fake):
    fake.script(Reply(events=sse(chunk("Hel"), {"error": {"message": "slot died"}})))
    response = gateway.call("POST", "/probe", json=body(stream=True))
    assert response.text.rstrip().endswith("failed UpstreamError")


def test_invalid_translated_body_is_a_typed_400_before_any_upstream_call(gateway, fake):
    before = len(fake.requests)
    response = gateway.call("POST", "/probe", json=body(temperature="hot"))
    assert response.status_code == 400
    assert response.json()["kind"] == "InvalidRequestError"
    assert "temperature" in response.json()["message"]
    assert len(fake.requests) == before


def test_unknown_model_is_a_typed_404(gateway):
    response = gateway.call("POST", "/probe", json={**body(), "model": "nope"})
    assert response.status_code == 404
    assert response.json()["kind"] == "ModelNotFoundError"


def test_upstream_failure_before_the_answer_is_a_typed_error(gateway, fake):
    fake.script(Reply(status=500, json={"error": {"message": "boom"}}))
    response = gateway.call("POST", "/probe", json=body())
    assert response.status_code == 502
    assert response.json()["kind"] == "UpstreamError"
