"""The echo engine, added as one engine module, one config class and one registry line,
served by a real `modelport serve` on the one worker app: driven with the official
openai SDK through the gateway and straight at its worker (the worker app's 404, 405,
body limit and worker key)."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from modelport.engines.echo import hash_vector
from support.server import ModelportServer, free_port

WORKER_KEY = "echo-worker-key-123"
DIMENSIONS = 8
BODY_LIMIT = 64 * 1024
QUESTION = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("echo")
    config = {
        "server": {"max_body_bytes": BODY_LIMIT, "models_dir": str(workdir)},
        "models": [{"name": "echo", "engine": "echo", "port": free_port(),
                    "worker_key": "${ECHO_WORKER_KEY}", "dimensions": DIMENSIONS}],
    }
    server = ModelportServer(config, workdir, env={"ECHO_WORKER_KEY": WORKER_KEY})
    server.start(timeout=120)
    yield server, config["models"][0]["port"]
    server.stop()


@pytest.fixture(scope="module")
def gateway(echo_server):
    server, _ = echo_server
    return openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def worker(echo_server):
    _, port = echo_server
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=WORKER_KEY,
                         max_retries=0, timeout=30)


def _ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "ignored"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": text}]


def test_chat_answers_with_the_last_user_message(gateway):
    answer = gateway.chat.completions.create(model="echo", messages=_ask(QUESTION))
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == QUESTION
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == len(QUESTION.split())


def test_chat_streams_word_by_word(gateway):
    stream = gateway.chat.completions.create(
        model="echo", messages=_ask(QUESTION), stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == QUESTION
    assert len(pieces) == len(QUESTION.split())  # one chunk per word
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(QUESTION.split())
    assert len({c.id for c in chunks}) == 1


def test_max_tokens_cuts_the_echo_with_finish_reason_length(gateway):
    answer = gateway.chat.completions.create(model="echo", messages=_ask(QUESTION), max_tokens=3)
    assert answer.choices[0].message.content == "the quick brown"
    assert answer.choices[0].finish_reason == "length"


def test_completions_echo_the_prompt(gateway):
    answer = gateway.completions.create(model="echo", prompt="hello there world")
    assert answer.choices[0].text == "hello there world"


def test_embeddings_are_the_deterministic_hash_vectors(gateway):
    texts = ["alpha", "beta", "alpha"]
    as_floats = gateway.embeddings.create(model="echo", input=texts, encoding_format="float")
    vectors = [item.embedding for item in as_floats.data]
    assert vectors[0] == pytest.approx(hash_vector("alpha", DIMENSIONS))
    assert vectors[1] == pytest.approx(hash_vector("beta", DIMENSIONS))
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    # The SDK's default asks for base64 and decodes it itself.
    decoded = gateway.embeddings.create(model="echo", input=texts).data[1].embedding
    assert decoded == pytest.approx(hash_vector("beta", DIMENSIONS), abs=1e-6)
    # Asked explicitly, base64 comes back as it is: float32, little-endian.
    packed = gateway.embeddings.create(model="echo", input=["beta"], encoding_format="base64")
    raw = base64.b64decode(packed.data[0].embedding)
    assert list(struct.unpack(f"<{DIMENSIONS}f", raw)) == pytest.approx(
        hash_vector("beta", DIMENSIONS), abs=1e-6)


def test_worker_serves_the_openai_api_itself_with_its_key(worker):
    answer = worker.chat.completions.create(model="echo", messages=_ask("direct line"))
    assert answer.choices[0].message.content == "direct line"
    assert [model.id for model in worker.models.list()] == ["echo"]


def test_worker_unknown_route_is_an_openai_404(worker):
    with pytest.raises(openai.NotFoundError) as raised:
        worker.models.retrieve("echo")  # GET /v1/models/echo: no such route on a worker
    assert raised.value.body["type"] == "invalid_request_error"


def test_worker_wrong_method_is_an_openai_405(worker):
    with pytest.raises(openai.APIStatusError) as raised:
        worker.get("/chat/completions", cast_to=object)
    assert raised.value.status_code == 405
    assert "GET is not allowed" in raised.value.body["message"]


def test_worker_refuses_a_body_over_the_limit_with_413(worker):
    with pytest.raises(openai.APIStatusError) as raised:
        worker.chat.completions.create(model="echo", messages=_ask("x" * (BODY_LIMIT + 10)))
    assert raised.value.status_code == 413
    assert raised.value.body["code"] == "payload_too_large"


def test_worker_without_its_key_is_401(echo_server):
    _, port = echo_server
    stranger = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-the-key",
                             max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as raised:
        stranger.chat.completions.create(model="echo", messages=_ask("hi"))
    assert raised.value.status_code == 401
    assert raised.value.response.headers["www-authenticate"] == "Bearer"
