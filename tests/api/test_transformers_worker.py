"""The transformers worker's OpenAI API, served by a real uvicorn on a loopback port
with a real SmolLM2 checkpoint (loaded once for the module).

A real server rather than an in-process ASGI transport, because streaming chunk by
chunk and a client that hangs up mid-stream are what these tests are about, and the
in-process transports buffer whole responses.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import httpx
import orjson
import pytest
import uvicorn

from fixtures.hf_checkpoint import smollm2_checkpoint  # noqa: F401  (pytest fixture)
from modelport.chat_templates import builtin_template
from modelport.config import TransformersModel
from modelport.engines.transformers_engine import TransformersEngine
from modelport.workers.transformers_worker import build_app

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
# A base-style continuation that runs to max_tokens: the model keeps counting.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
CONTEXT_LENGTH = 1024


class ServedApp:
    """uvicorn serving an app on a free loopback port, in a background thread."""

    def __init__(self, app):
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()


def _model(path, **overrides) -> TransformersModel:
    fields = {
        "name": "smollm2-hf",
        "engine": "transformers",
        "path": str(path),
        "device": "cpu",
        "context_length": CONTEXT_LENGTH,
        **overrides,
    }
    return TransformersModel(**fields)


@pytest.fixture(scope="module")
def engine(smollm2_checkpoint):  # noqa: F811
    return TransformersEngine.load(_model(smollm2_checkpoint), smollm2_checkpoint)


@pytest.fixture(scope="module")
def server(engine):
    with ServedApp(build_app(engine)) as served:
        yield served


@pytest.fixture(scope="module")
def one_slot_engine(engine):
    """The same loaded weights behind a gate of 1 running + 1 waiting request."""
    return TransformersEngine(engine.checkpoint, name=engine.name, parallel=1, max_queue=1)


@pytest.fixture(scope="module")
def one_slot_server(one_slot_engine):
    with ServedApp(build_app(one_slot_engine)) as served:
        yield served


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


def _sse_payloads(response: httpx.Response) -> list:
    """Decoded `data:` payloads of a stream, with "[DONE]" kept as a string."""
    payloads = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            payloads.append(data if data == "[DONE]" else orjson.loads(data))
    return payloads


def _wait_until(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


# -- plain routes --------------------------------------------------------------------


def test_health_and_models(http, engine):
    assert http.get("/health").json() == {"status": "ok"}
    listing = http.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [model["id"] for model in listing["data"]] == [engine.name]


def test_unknown_route_is_an_openai_404(http):
    response = http.get("/v1/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


# -- chat ------------------------------------------------------------------------------


def test_chat_answers_paris_in_openai_shape(http, engine):
    response = http.post(
        "/v1/chat/completions", json={"model": "smollm2-hf", "messages": CAPITAL, "temperature": 0}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == engine.name
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stream_arrives_in_several_chunks_and_ends_with_usage(http):
    request = {
        "model": "smollm2-hf",
        "messages": CAPITAL,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = _sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3  # token by token, not one blob
    text = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    assert "Paris" in text
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] >= len(content_chunks)
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


def test_official_openai_client_streams(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.base_url}/v1", api_key="EMPTY", max_retries=0)
    stream = client.chat.completions.create(
        model="smollm2-hf", messages=CAPITAL, temperature=0, stream=True, max_tokens=30
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Paris" in text


def test_stop_sequence_ends_the_answer_before_it(http):
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2-hf",
            "messages": CAPITAL,
            "temperature": 0,
            "stop": [" Paris", "Lyon"],
        },
    )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "Paris" not in choice["message"]["content"]
    assert choice["message"]["content"].startswith("The capital of France")


def test_max_tokens_gives_finish_reason_length(http):
    body = http.post(
        "/v1/chat/completions",
        json={"model": "smollm2-hf", "messages": CAPITAL, "temperature": 0, "max_tokens": 3},
    ).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_prompt_longer_than_the_context_is_a_400(http):
    long_message = [{"role": "user", "content": "word " * (CONTEXT_LENGTH + 100)}]
    response = http.post(
        "/v1/chat/completions", json={"model": "smollm2-hf", "messages": long_message}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert str(CONTEXT_LENGTH) in error["message"]


def test_max_tokens_beyond_the_context_is_a_400(http):
    response = http.post(
        "/v1/chat/completions",
        json={"model": "smollm2-hf", "messages": CAPITAL, "max_tokens": CONTEXT_LENGTH},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (orjson.dumps({"model": "smollm2-hf"}), "messages"),
        (
            orjson.dumps({"model": "smollm2-hf", "messages": CAPITAL, "temperature": "hot"}),
            "temperature",
        ),
        (orjson.dumps({"model": "smollm2-hf", "messages": CAPITAL, "n": 2}), "n"),
    ],
)
def test_invalid_bodies_are_400_with_an_envelope(http, body, param):
    response = http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tools_on_a_template_that_cannot_render_them_are_a_400_naming_the_model(http):
    response = http.post("/v1/chat/completions", json={
        "model": "smollm2-hf", "messages": CAPITAL, "tools": [TOOL], "max_tokens": 4})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools" and error["code"] == "tools_unsupported"
    assert "model 'smollm2-hf' cannot call tools" in error["message"]
    assert "chatml-tools" in error["message"]
    # tool_choice none: the tools are context only, and the model answers.
    answered = http.post("/v1/chat/completions", json={
        "model": "smollm2-hf", "messages": CAPITAL, "tools": [TOOL], "tool_choice": "none",
        "max_tokens": 4})
    assert answered.status_code == 200


def test_a_forced_call_stops_generating_once_its_arguments_are_complete(engine):
    checkpoint = replace(engine.checkpoint, chat_template=builtin_template("chatml-tools"))
    tools_engine = TransformersEngine(checkpoint, name="tools", parallel=1, max_queue=1)
    with ServedApp(build_app(tools_engine)) as served, httpx.Client(
            base_url=served.base_url, timeout=120) as client:
        answer = client.post("/v1/chat/completions", json={
            "model": "tools", "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [TOOL], "tool_choice": "required", "max_tokens": 200,
            "temperature": 0}).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["city"]
    assert answer["usage"]["completion_tokens"] < 60  # ended at the call, not at max_tokens


# -- completions -------------------------------------------------------------------------


def test_text_completion_continues_the_prompt(http):
    body = http.post(
        "/v1/completions",
        json={"model": "smollm2-hf", "prompt": COUNTING, "temperature": 0, "max_tokens": 8},
    ).json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"].startswith(" 9, 10")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8


def test_text_completion_streams(http):
    request = {
        "model": "smollm2-hf",
        "prompt": COUNTING,
        "temperature": 0,
        "max_tokens": 8,
        "stream": True,
    }
    with http.stream("POST", "/v1/completions", json=request) as response:
        payloads = _sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    texts = [chunk["choices"][0]["text"] for chunk in payloads[:-1]]
    assert len([t for t in texts if t]) >= 3
    assert "".join(texts).startswith(" 9, 10")
    assert payloads[-2]["choices"][0]["finish_reason"] == "length"


# -- failures after the 200 ---------------------------------------------------------------


def test_a_stream_that_fails_after_its_200_ends_with_an_error_event(http, engine, monkeypatch):
    def broken_forward(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(engine.checkpoint.model, "forward", broken_forward)
    request = {"model": "smollm2-hf", "messages": CAPITAL, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        payloads = _sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    assert "device-side assert" in payloads[-2]["error"]["message"]

    plain = http.post("/v1/chat/completions", json={"model": "smollm2-hf", "messages": CAPITAL})
    assert plain.status_code == 500
    assert plain.json()["error"]["type"] == "server_error"


# -- queueing and cancellation ---------------------------------------------------------


def _counting_stream_request(max_tokens: int = 900) -> dict:
    return {
        "model": "smollm2-hf",
        "prompt": COUNTING,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
    }


def test_full_queue_answers_429_and_disconnects_free_the_slots(one_slot_server, one_slot_engine):
    base = one_slot_engine.stats()
    with httpx.Client(base_url=one_slot_server.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=_counting_stream_request()) as running:
            assert running.status_code == 200
            # Kept: a discarded line iterator closes the connection, which cancels it.
            lines = running.iter_lines()
            next(lines)  # generating now
            with client.stream(
                "POST", "/v1/completions", json=_counting_stream_request()
            ) as queued:
                assert queued.status_code == 200
                _wait_until(lambda: one_slot_engine.stats().waiting == 1, timeout=10)

                refused = client.post("/v1/completions", json=_counting_stream_request())
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["type"] == "rate_limit_error"
    # Both clients hung up; 900 tokens would take about a minute, the slots free in moments.
    _wait_until(lambda: one_slot_engine.stats().in_flight == 0, timeout=5)
    assert one_slot_engine.stats().cancelled_total == base.cancelled_total + 2


def test_client_disconnect_stops_the_generation_thread(server, engine):
    base = engine.stats()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "smollm2-hf",
                "temperature": 0,
                "max_tokens": 900,
                "stream": True,
                "messages": [
                    {"role": "user", "content": "Count from 1 to 1000, one number per line."}
                ],
            },
        ) as response:
            lines = response.iter_lines()
            received = [line for _, line in zip(range(6), lines, strict=False)]
            assert any('"content"' in line for line in received)
            assert engine.stats().running == 1
    elapsed = _wait_until(lambda: engine.stats().in_flight == 0, timeout=5)
    assert elapsed < 5  # 900 tokens at ~20 tok/s would take ~45 s
    assert engine.stats().cancelled_total == base.cancelled_total + 1


def test_client_leaving_a_non_streaming_request_stops_the_generation(server, engine):
    base = engine.stats()
    body = orjson.dumps({"model": "smollm2-hf", "temperature": 0, "max_tokens": 900, "messages": [
        {"role": "user", "content": "Count from 1 to 1000, one number per line."}]})
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: w\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        _wait_until(lambda: engine.stats().running == 1, timeout=20)
    # 900 tokens at ~20 tok/s would take ~45 s; the margin is for a loaded machine.
    _wait_until(lambda: engine.stats().in_flight == 0, timeout=15)
    assert engine.stats().cancelled_total == base.cancelled_total + 1


def test_tokenize_counts_the_prompt_a_chat_request_is_answered_from(http):
    """vLLM's chat form of /tokenize, which /v1/messages/count_tokens asks for an exact count."""
    counted = http.post("/tokenize", json={"messages": CAPITAL})
    assert counted.status_code == 200
    answer = http.post("/v1/chat/completions",
                       json={"model": "smollm2-hf", "messages": CAPITAL, "max_tokens": 1})
    assert counted.json()["count"] == len(counted.json()["tokens"])
    assert counted.json()["count"] == answer.json()["usage"]["prompt_tokens"] > 0
    bad = http.post("/tokenize", json={"messages": [{"role": "nobody", "content": "x"}]})
    assert bad.status_code == 400 and "messages[0].role" in bad.json()["error"]["message"]
