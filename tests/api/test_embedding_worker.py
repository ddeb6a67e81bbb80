"""The embedding worker's OpenAI API under concurrent load, in-process over ASGI, with the
real all-MiniLM-L6-v2 model (loaded once for the module)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.config import SentenceTransformersModel
from modelport.engines.embeddings import EmbeddingEngine
from modelport.config.locations import resolve_location
from modelport.workers.embedding_worker import build_app
from support.models import EMBED, MINILM

WORDS = ("the quick brown fox jumps over a lazy dog while modelport serves vectors to many "
         "concurrent clients across loopback sockets tokenizers pad every batch").split()
# Lengths from 1 to 16 words: the texts of one batch need padding, yet stay cheap to encode.
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=1 + (i * 7) % 16)) + f" #{i}"
         for i in range(48)]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def engine() -> EmbeddingEngine:
    path = resolve_location(MINILM, Path("."), EMBED)
    return EmbeddingEngine(SentenceTransformersModel(
        name=EMBED, engine="sentence-transformers", path=MINILM, max_queue=4096), path)


@pytest.fixture(scope="module")
def alone() -> dict[str, np.ndarray]:
    """Each text's vector, encoded on its own by sentence-transformers (the engine serves
    MiniLM on its own encoder: these are the vectors it must give)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_location(MINILM, Path("."), EMBED)), device="cpu",
                                local_files_only=True)
    return {text: model.encode(text, convert_to_numpy=True) for text in TEXTS}


async def _serve(engine, requests: list[tuple[dict, int]]) -> list[httpx.Response]:
    """POST each (body, group) with at most `group` requests of its group in flight."""
    app = build_app(engine)
    limits: dict[int, asyncio.Semaphore] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker",
                                     timeout=60) as client:
            async def post(body: dict, in_flight: int) -> httpx.Response:
                limit = limits.setdefault(in_flight, asyncio.Semaphore(in_flight))
                async with limit:
                    return await client.post("/v1/embeddings", json=body)

            return await asyncio.gather(*(post(body, n) for body, n in requests))


def _error_summary(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(r.status_code, r.text[:120]) for r in responses if r.status_code != 200]


def test_concurrent_requests_each_get_their_own_answer(engine, alone):
    """Every request succeeds with the vectors of its texts encoded alone; token ids
    embed like their text, and an over-length input is a 400 for its request only."""
    single = [({"model": EMBED, "input": TEXTS[i % len(TEXTS)]}, 16) for i in range(512)]
    pairs = [({"model": EMBED, "input": [TEXTS[i % len(TEXTS)], TEXTS[(i * 5 + 1) % len(TEXTS)]]},
              48) for i in range(192)]
    ids, = engine.encoder.token_ids([TEXTS[5]], special_tokens=False)
    by_ids = ({"model": EMBED, "input": ids}, 16)
    too_long = ({"model": EMBED, "input": [TEXTS[1], "word " * (engine.max_tokens + 10)]}, 48)
    requests = single + pairs
    random.Random(0).shuffle(requests)
    requests[100:100] = [by_ids, too_long]

    responses = asyncio.run(_serve(engine, requests))

    assert responses[101].status_code == 400
    error = responses[101].json()["error"]
    assert error["code"] == "context_length_exceeded" and error["message"].startswith("input[1] ")
    id_answer = responses[100].json()
    assert id_answer["usage"]["prompt_tokens"] == len(ids) + 2  # [CLS] ... [SEP]
    assert np.abs(np.asarray(id_answer["data"][0]["embedding"]) - alone[TEXTS[5]]).max() < TOLERANCE
    del requests[100:102], responses[100:102]
    assert _error_summary(responses) == []
    for (body, _), response in zip(requests, responses):
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = response.json()["data"]
        assert [d["index"] for d in data] == list(range(len(texts)))
        for text, item in zip(texts, data):
            assert np.abs(np.asarray(item["embedding"]) - alone[text]).max() < TOLERANCE


def test_one_failing_job_in_a_batch_fails_only_its_own_request(engine, alone):
    good = [[TEXTS[i]] for i in range(12)]
    # An input the tokenizer refuses; it shares a batch with the good jobs because all are
    # queued before the batch loop runs again.
    poison = [TEXTS[0], 12345]

    async def run() -> list:
        await engine.start()
        try:
            jobs = [engine.embed(texts) for texts in good[:6]]
            jobs.append(engine.embed(poison))
            jobs.extend(engine.embed(texts) for texts in good[6:])
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await engine.stop()

    outcomes = asyncio.run(run())

    assert isinstance(outcomes[6], Exception)
    good_outcomes = outcomes[:6] + outcomes[7:]
    assert [o for o in good_outcomes if isinstance(o, BaseException)] == []
    for texts, outcome in zip(good, good_outcomes):
        assert np.abs(np.asarray(outcome.vectors[0]) - alone[texts[0]]).max() < TOLERANCE


class _BrokenEngine:
    """Stands in for an engine whose forward pass hits a bug."""

    name, dimensions = EMBED, 384

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def embed(self, inputs):
        raise RuntimeError("Unable to create tensor")


def test_an_unexpected_engine_error_is_an_openai_error_envelope():
    responses = asyncio.run(_serve(_BrokenEngine(), [({"model": EMBED, "input": "hi"}, 1)]))

    assert responses[0].status_code == 500
    assert responses[0].headers["content-type"] == "application/json"
    error = responses[0].json()["error"]
    assert error["type"] == "server_error" and "Unable to create tensor" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
