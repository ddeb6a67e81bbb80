"""POST /v1/rerank against a real `modelport serve`: the default config's embedding model
(cosine similarity), a configured cross-encoder, and the same cross-encoder as a GGUF
reranker served by llama.cpp, over plain HTTP as RAG clients call it."""

from __future__ import annotations

import httpx
import pytest

from fixtures.cross_encoder import minilm_cross_encoder_path
from modelport.config.defaults import DEFAULT_CONFIG, DEFAULT_EMBEDDING_MODEL
from support.models import CHAT, EMBED, GGUF_RERANKER, RERANKER

pytestmark = pytest.mark.e2e

# Simple queries, each with one relevant document among unrelated ones.
CASES = [
    ("What is the capital of France?",
     ["The stock market closed higher on Friday.", "Paris is the capital city of France.",
      "Cats sleep for most of the day.", "Photosynthesis converts light into energy."], 1),
    ("How do I cook pasta?",
     ["Boil the pasta in salted water for ten minutes, then drain it.",
      "The Moon orbits the Earth every 27 days.", "Jazz was born in New Orleans."], 0),
    ("symptoms of the flu",
     ["Tax returns are due in April.", "Mount Everest is the highest mountain.",
      "Influenza brings fever, cough, a sore throat and aching muscles."], 2),
]


def rerank(server, **body) -> httpx.Response:
    return httpx.post(server.base_url + "/rerank", json=body, timeout=120)


def test_the_default_config_reranks_with_its_embedding_model(server):
    # The e2e server serves the built-in default config's embedding model as it is.
    default_embedding = next(m for m in DEFAULT_CONFIG["models"]
                             if m["name"] == DEFAULT_EMBEDDING_MODEL)
    assert default_embedding["name"] == EMBED

    for query, documents, relevant in CASES:
        response = rerank(server, model=EMBED, query=query, documents=documents)
        assert response.status_code == 200, response.text
        body = response.json()
        scores = [r["relevance_score"] for r in body["results"]]
        assert body["results"][0]["index"] == relevant, body
        assert scores == sorted(scores, reverse=True) and len(scores) == len(documents)
        assert all(-1.0 <= s <= 1.0 for s in scores)  # cosine similarities
        assert body["model"] == EMBED and body["usage"]["prompt_tokens"] > 0


def test_a_configured_cross_encoder_ranks_with_the_scores_of_the_model_itself(server):
    from sentence_transformers import CrossEncoder

    in_process = CrossEncoder(str(minilm_cross_encoder_path()), local_files_only=True)
    for query, documents, relevant in CASES:
        response = rerank(server, model=RERANKER, query=query,
                          documents=[{"text": d} for d in documents], return_documents=True,
                          top_n=2)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        expected = in_process.predict([(query, d) for d in documents])
        assert len(results) == 2 and results[0]["index"] == relevant, results
        for result in results:
            assert result["document"] == {"text": documents[result["index"]]}
            assert abs(result["relevance_score"] - float(expected[result["index"]])) < 1e-4


def test_a_gguf_reranker_on_llamacpp_scores_like_the_model_it_was_written_from(server):
    import torch
    from sentence_transformers import CrossEncoder

    in_process = CrossEncoder(str(minilm_cross_encoder_path()), local_files_only=True)
    for query, documents, relevant in CASES:
        response = rerank(server, model=GGUF_RERANKER, query=query, documents=documents,
                          return_documents=True)
        assert response.status_code == 200, response.text
        body = response.json()
        # llama.cpp's answer completed by the gateway: an id, documents, sorted results
        assert body["id"].startswith("rerank-") and body["model"] == GGUF_RERANKER
        results = body["results"]
        assert results[0]["index"] == relevant, results
        assert results[0]["document"] == {"text": documents[relevant]}
        # llama.cpp reports the classifier's raw logit (no sigmoid)
        logits = in_process.predict([(query, d) for d in documents],
                                    activation_fn=torch.nn.Identity())
        for result in results:
            assert abs(result["relevance_score"] - float(logits[result["index"]])) < 0.02
        assert body["usage"]["prompt_tokens"] > 0


def test_models_say_how_each_model_reranks(server):
    cards = {card["id"]: card for card in
             httpx.get(server.base_url + "/models", timeout=10).json()["data"]}
    assert cards[EMBED]["rerank"] == "embedding-cosine-similarity"
    for reranker in (RERANKER, GGUF_RERANKER):
        assert cards[reranker]["rerank"] == "cross-encoder" and cards[reranker]["kind"] == "rerank"
    assert cards[CHAT]["rerank"] is None


@pytest.mark.parametrize("body, status, param", [
    ({"model": CHAT, "query": "q", "documents": ["d"]}, 400, "model"),
    ({"model": "no-such-reranker", "query": "q", "documents": ["d"]}, 404, "model"),
    ({"model": RERANKER, "query": "q", "documents": []}, 400, "documents"),
    ({"model": RERANKER, "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
    ({"model": EMBED, "query": "q", "documents": ["word " * 600]}, 400, "documents[0]"),
])
def test_errors_name_the_parameter(server, body, status, param):
    response = rerank(server, **body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("reranker", [RERANKER, GGUF_RERANKER])
def test_a_reranker_refuses_chat_naming_the_route_to_use(server, reranker):
    response = httpx.post(server.base_url + "/chat/completions", timeout=30, json={
        "model": reranker, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert "is a reranker; use /v1/rerank" in response.json()["error"]["message"]
