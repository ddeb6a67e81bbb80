"""Property-based fuzzing of a real `modelport serve`, driven by its own /openapi.json.

schemathesis turns the document into valid and invalid requests for every operation;
the model name is then often swapped for a served one so that requests reach a fast
fake OpenAI upstream, the real embedding model and a real GGUF model (with a small
context and queue, and generation capped, to keep the run to about a minute on two
cores). Whatever is sent: never a 5xx, every error in OpenAI's envelope (Anthropic's on
/v1/messages), and a healthy server afterwards.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import orjson
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from support.models import EMBED, MINILM, SMOLLM2
from support.server import ModelportServer
from support.threaded_app import ThreadedApp

pytestmark = pytest.mark.e2e

ONLINE, GGUF = "fuzz-online", "fuzz-gguf"
SERVED = (ONLINE, GGUF, EMBED)
EXAMPLES = 400
REPLY_TOKENS = 4  # generation on the real GGUF model is capped so fuzzing stays quick


class StubUpstream(ThreadedApp):
    """An OpenAI-compatible API that answers every valid request at once (JSON or SSE)."""

    async def _answer(self, request: web.Request, kind: str) -> web.StreamResponse:
        body = await request.json()
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        head = {"id": "x-1", "created": 0, "model": body["model"]}
        if kind == "chat":
            head["object"] = "chat.completion"
            choice = {"message": {"role": "assistant", "content": "ok"}}
            deltas = [{"delta": {"role": "assistant", "content": "ok"}}, {"delta": {}}]
        else:
            head["object"] = "text_completion"
            choice = {"text": "ok", "logprobs": None}
            deltas = [{"text": "ok"}, {"text": ""}]
        if not body.get("stream"):
            return web.json_response({**head, "usage": usage, "choices": [
                {"index": 0, "finish_reason": "stop", **choice}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if kind == "chat":
            head["object"] = "chat.completion.chunk"
        for delta, finish in zip(deltas, (None, "stop")):
            chunk = {**head, "choices": [{"index": 0, "finish_reason": finish, **delta}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage})
                             + b"\n\ndata: [DONE]\n\n")
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "completion")

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def _rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        results = [{"index": i, "relevance_score": 1.0 / (1 + i)}
                   for i in range(len(body["documents"]))]
        return web.json_response({"model": body["model"], "results": results,
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/rerank", self._rerank)
        return app


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    upstream = StubUpstream().start()
    config = {
        "server": {"max_body_bytes": 256 * 1024},
        "models": [
            {"name": ONLINE, "engine": "openai", "base_url": upstream.url,
             "max_concurrency": 8, "max_queue": 8},
            {"name": GGUF, "engine": "llamacpp", "path": SMOLLM2, "context_length": 256,
             "parallel": 1, "max_queue": 1},
            {"name": EMBED, "engine": "sentence-transformers", "path": MINILM},
        ],
    }
    server = ModelportServer(config, tmp_path_factory.mktemp("fuzz"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        upstream.stop()


def _cap_generation(body: dict) -> None:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is None or (type(value) is int and value > REPLY_TOKENS):
            body[key] = REPLY_TOKENS  # unset (or null) would generate until the context is full
    if type(body.get("n")) is int and body["n"] > 2:
        body["n"] = 2


def _aim(case, model: str | None) -> None:
    """Point a generated body at a served model (None keeps the fuzzer's own name)."""
    if model is None or not isinstance(case.body, dict):
        return
    case.body["model"] = model
    if model == GGUF:
        _cap_generation(case.body)


def _assert_envelope(response, path: str) -> None:
    try:
        body = response.json()
        error = body["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"not an error envelope: {response.text[:500]!r}") from None
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and set(error) == {"type", "message"}, body
    else:
        assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str), error


def test_fuzzed_requests_never_500_and_errors_are_envelopes(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/messages",
        "/v1/messages/count_tokens", "/v1/models", "/v1/models/{model}", "/v1/responses",
        "/v1/responses/{response_id}", "/health"}
    # Well-formed generation requests are weighted up: they are the ones that reach engines.
    cases = st.one_of([
        operation.as_strategy(generation_mode=mode) for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for _ in range(3 if operation.method == "post" and mode is GenerationMode.POSITIVE else 1)
    ])
    # The GGUF model is weighted so that some well-formed requests reach llama.cpp in every
    # run, whatever hypothesis draws.
    models = st.sampled_from([ONLINE] * 4 + [GGUF] * 3 + [EMBED, None, None])
    seen: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate],  # the server keeps state: shrinking would mislead
              suppress_health_check=list(HealthCheck))
    @given(case=cases, model=models)
    def fuzz(case, model) -> None:
        _aim(case, model)
        response = case.call(base_url=fuzz_server.url, timeout=60)
        served = case.body.get("model") if isinstance(case.body, dict) else None
        seen[response.status_code, case.path, served if served in SERVED else "-"] += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} body={case.body!r} -> "
            f"{response.status_code} {response.text[:500]!r}")
        if response.status_code >= 400:
            _assert_envelope(response, case.path)

    started = time.monotonic()
    fuzz()
    print(f"fuzzed {sum(seen.values())} requests in {time.monotonic() - started:.0f}s:")
    for key, count in sorted(seen.items(), key=str):
        print(f"  {count:4d} {key}")
    statuses = {status for status, _, _ in seen}
    assert 200 in statuses and 400 in statuses and 404 in statuses
    # Real engines were asked, and still answer a well-formed request after the fuzzing.
    assert any(model == GGUF for _, _, model in seen)
    assert any(model == EMBED for _, _, model in seen)
    after = httpx.post(fuzz_server.url + "/v1/chat/completions", timeout=60, json={
        "model": GGUF, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]
    health = httpx.get(fuzz_server.url + "/health", timeout=10)
    assert health.status_code == 200
    assert all(model["status"] == "ready" for model in health.json()["models"].values())
    assert fuzz_server.process.poll() is None
