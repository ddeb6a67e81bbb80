"""The cross-encoder worker's /v1/rerank in-process over ASGI, with a real (small, trained)
sentence-transformers CrossEncoder loaded once for the module."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from fixtures.cross_encoder import minilm_cross_encoder  # noqa: F401 - a fixture
from modelport.config import CrossEncoderModel
from modelport.engines.cross_encoder import CrossEncoderEngine
from modelport.workers.cross_encoder_worker import build_app

TOLERANCE = 1e-5
# Queries and passages the model never saw in training.
CASES = [
    ("Where is the Eiffel Tower, in which country's capital?",
     ["Bananas are rich in potassium.", "The Eiffel Tower stands in Paris, the French capital.",
      "The stock market fell sharply today."], 1),
    ("how to cook pasta",
     ["Mount Everest is the highest mountain.", "Jazz originated in New Orleans.",
      "Boil pasta in salted water for about ten minutes."], 2),
    ("what do cats eat",
     ["Cats are carnivores and need meat in their diet.", "The Moon orbits the Earth.",
      "Tax returns are due in April."], 0),
]


@pytest.fixture(scope="module")
def engine(minilm_cross_encoder) -> CrossEncoderEngine:  # noqa: F811
    return CrossEncoderEngine(CrossEncoderModel(
        name="reranker", engine="cross-encoder", path=str(minilm_cross_encoder), batch_size=4,
        max_queue=256), minilm_cross_encoder)


async def _post_all(engine, bodies: list[dict]) -> list[httpx.Response]:
    app = build_app(engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker",
                                     timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/rerank", json=b) for b in bodies))


def test_concurrent_requests_get_the_scores_of_the_model_called_in_process(engine):
    # Sent together, they are scored in shared forward passes (batch_size 4 < 9 pairs).
    bodies = [{"model": "reranker", "query": q, "documents": docs} for q, docs, _ in CASES] * 2
    responses = asyncio.run(_post_all(engine, bodies))

    assert [r.status_code for r in responses] == [200] * len(bodies)
    for body, response in zip(bodies, responses):
        expected = engine.encoder.predict([(body["query"], d) for d in body["documents"]])
        results = response.json()["results"]
        assert [r["index"] for r in results] == list(np.argsort(-expected))
        for result in results:
            assert abs(result["relevance_score"] - expected[result["index"]]) < TOLERANCE
        assert response.json()["usage"]["prompt_tokens"] > sum(
            len(d.split()) for d in body["documents"])


def test_the_relevant_passage_ranks_first_for_queries_never_trained_on(engine):
    bodies = [{"model": "reranker", "query": q, "documents": docs} for q, docs, _ in CASES]
    responses = asyncio.run(_post_all(engine, bodies))

    for (_, _, relevant), response in zip(CASES, responses):
        results = response.json()["results"]
        assert results[0]["index"] == relevant, results
        assert results[0]["relevance_score"] > 0.5 > results[-1]["relevance_score"]


def test_a_document_longer_than_the_model_reads_is_cut_not_refused(engine):
    long_document = "Paris is the capital of France. " * 200  # ~1,400 tokens > 512
    body = {"model": "reranker", "query": "capital of France",
            "documents": [long_document, "Bananas are yellow."]}
    response = asyncio.run(_post_all(engine, [body]))[0]

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 0
    assert response.json()["usage"]["prompt_tokens"] <= engine.max_tokens + 20


def test_a_bad_body_is_a_400_envelope_naming_the_parameter(engine):
    response = asyncio.run(_post_all(engine, [{"model": "reranker", "query": "q",
                                               "documents": [], "top_n": 1}]))[0]
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "documents"
