"""One gateway serving a GGUF model, a Hugging Face checkpoint and an embedding model."""

from __future__ import annotations

import asyncio

import openai
import pytest

from fixtures.hf_checkpoint import smollm2_checkpoint_path
from support.models import EMBED, MINILM, SMOLLM2
from support.server import ModelportServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory):
    checkpoint = smollm2_checkpoint_path()
    config = {"models": [
        {"name": "gguf-chat", "engine": "llamacpp", "path": SMOLLM2, "context_length": 2048},
        {"name": "hf-chat", "engine": "auto", "path": str(checkpoint), "device": "cpu",
         "context_length": 2048, "parallel": 2},
        {"name": EMBED, "engine": "sentence-transformers", "path": MINILM},
    ]}
    server = ModelportServer(config, tmp_path_factory.mktemp("mixed")).start(timeout=300)
    yield server
    server.stop()


def test_both_chat_models_stream_through_one_gateway(mixed_server):
    async def stream(client, model):
        pieces = []
        response = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0, stream=True)
        async for chunk in response:
            assert chunk.model == model
            pieces += [c.delta.content or "" for c in chunk.choices]
        return pieces

    async def run():
        client = openai.AsyncOpenAI(base_url=mixed_server.base_url, api_key="EMPTY",
                                    max_retries=0, timeout=300)
        return await asyncio.gather(stream(client, "gguf-chat"), stream(client, "hf-chat"))

    gguf, hf = asyncio.run(run())
    for pieces in (gguf, hf):
        assert len([p for p in pieces if p]) > 3, pieces  # several chunks, not one blob
    assert "Paris" in "".join(hf)


def test_auto_engine_chose_transformers_for_the_checkpoint(mixed_server):
    health = mixed_server.health()
    assert health["models"]["hf-chat"]["status"] == "ready"
    assert "transformers" in mixed_server.log()  # the one fallback warning names it
    client = openai.OpenAI(base_url=mixed_server.base_url, api_key="EMPTY", max_retries=0)
    assert len(client.embeddings.create(model=EMBED, input="x").data[0].embedding) == 384


def test_count_tokens_is_exact_for_the_transformers_model(mixed_server):
    import anthropic
    client = anthropic.Anthropic(base_url=mixed_server.url, api_key="EMPTY", max_retries=0,
                                 timeout=300)
    fields = dict(model="hf-chat", messages=[{"role": "user", "content": "Hi there"}])
    raw = client.messages.with_raw_response.count_tokens(**fields)
    assert raw.headers["x-modelport-token-count"] == "exact"
    answered = client.messages.create(max_tokens=1, **fields)
    assert raw.parse().input_tokens == answered.usage.input_tokens > 0
