"""The OpenAI API through a real gateway and real workers, driven by the official SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time

import httpx
import openai
import pytest

from support.models import CHAT, EMBED

pytestmark = pytest.mark.e2e


def test_models_lists_every_configured_model(client):
    ids = {model.id for model in client.models.list().data}
    assert {CHAT, EMBED, "chained", "echo-upstream"} <= ids


def test_chat_answers_the_documented_hello(client):
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hello! What is your name?"}],
        max_tokens=100, temperature=0,
    )
    assert reply.model == CHAT
    assert reply.choices[0].message.role == "assistant"
    assert len(reply.choices[0].message.content.strip()) > 0
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0


def test_alias_reaches_the_same_model(client):
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=5)
    assert reply.model == CHAT


def test_max_tokens_and_max_completion_tokens_limit_the_answer(client):
    for limit_field in ("max_tokens", "max_completion_tokens"):
        reply = client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Write a long story about a cat."}],
            temperature=0, **{limit_field: 3},
        )
        assert reply.usage.completion_tokens == 3, limit_field
        assert reply.choices[0].finish_reason == "length"


def test_seed_and_temperature_zero_are_deterministic(client):
    def ask():
        return client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=12, temperature=0, seed=7, top_p=1,
        ).choices[0].message.content

    assert ask() == ask()


def test_stop_sequence_ends_the_answer(client):
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Count from 1 to 10, comma separated."}],
        max_tokens=60, temperature=0, stop=["5"],
    )
    assert "5" not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


def test_streaming_arrives_incrementally(client):
    arrivals, text = [], []
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=60, temperature=0, stream=True,
    )
    for chunk in stream:
        arrivals.append(time.perf_counter())
        assert chunk.usage is None  # not asked for, so not sent
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] > 0.02, "all chunks arrived at once: not streamed"
    assert "".join(text).strip()


def test_stream_usage_chunk_when_asked(client):
    chunks = list(client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 8
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_n_greater_than_one_returns_that_many_choices(client):
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, n=2)
    assert [c.index for c in reply.choices] == [0, 1]


def test_json_object_response_parses(client):
    reply = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Give a JSON object with a name and an age."}],
        max_tokens=200, temperature=0, response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_json_schema_response_follows_the_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"city"} and isinstance(data["city"], str)


def test_completions_endpoint(client):
    reply = client.completions.create(model=CHAT, prompt="The capital of France is",
                                      max_tokens=8, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text.strip()
    assert reply.usage.completion_tokens > 0


def test_completions_stream(client):
    pieces = [c.choices[0].text for c in client.completions.create(
        model=CHAT, prompt="Once upon a time", max_tokens=10, stream=True,
        extra_body={"ignore_eos": True}) if c.choices]
    assert len(pieces) >= 3


def test_completions_of_several_prompts_stream_and_not(client):
    """llama.cpp opens such a stream with `data: null`, which clients cannot parse."""
    whole = client.completions.create(model=CHAT, prompt=["One", "Two"], max_tokens=3,
                                      extra_body={"ignore_eos": True})
    assert sorted(c.index for c in whole.choices) == [0, 1]
    assert all(c.text for c in whole.choices)
    streamed = {}
    for chunk in client.completions.create(model=CHAT, prompt=["One", "Two"], max_tokens=3,
                                           stream=True, extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert sorted(streamed) == [0, 1] and all(streamed.values())


def test_embeddings_float_and_base64_agree(client):
    floats = client.embeddings.create(model=EMBED, input=["hello world", "modelport"],
                                      encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    raw = httpx.post(f"{client.base_url}embeddings", json={
        "model": EMBED, "input": "hello world", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)
    single = client.embeddings.create(model=EMBED, input="hello world")
    assert single.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-5)


def test_eight_concurrent_streams_all_succeed(server):
    async def one(client, i):
        text, usage = [], None
        stream = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": f"Write a line about number {i}."}],
            max_tokens=40, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})  # every stream runs its full 40 tokens
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
        return "".join(text), usage

    async def run():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
        return await asyncio.gather(*(one(client, i) for i in range(8)))

    answers = asyncio.run(run())
    assert len(answers) == 8
    for text, usage in answers:
        assert usage.completion_tokens == 40
        assert text  # the streamed pieces add up to an answer


def test_chain_through_a_second_hop_streams(client):
    chunks = list(client.chat.completions.create(
        model="chained", messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[-1].usage.completion_tokens == 10
    assert {c.model for c in chunks} == {"chained"}  # upstream's name rewritten


def test_openai_upstream_gets_key_and_model_id_and_answers_with_our_name(client):
    reply = client.chat.completions.create(
        model="echo-upstream", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "echo-upstream"
    assert reply.choices[0].message.content == "auth=Bearer sk-upstream-secret-123"


def test_old_openai_sdk_style_request(server):
    # openai<1 posts the same JSON with `Authorization: Bearer EMPTY` to api_base + path.
    response = httpx.post(server.base_url + "/chat/completions", headers={
        "Authorization": "Bearer EMPTY", "User-Agent": "OpenAI/v1 PythonBindings/0.28.1"},
        json={"model": CHAT, "messages": [{"role": "user", "content": "Hello! What is your name?"}],
              "max_tokens": 100}, timeout=60)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


def test_health_reports_every_model_ready(server):
    health = server.health()
    assert health["ready"] is True
    assert health["models"][CHAT]["status"] == "ready"
    assert health["models"][CHAT]["worker"]["pid"] > 0
