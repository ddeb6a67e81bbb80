"""/v1/rerank's request schema, its answer's shape, and which models may serve it."""

from __future__ import annotations

import pytest

from modelport.config import parse_config
from modelport.errors import InvalidRequestError, MalformedUpstreamError, ModelNotFoundError
from modelport.gateway.build import build_state
from modelport.protocol import RerankRequest, validate_request
from modelport.reranking import (
    CROSS_ENCODER,
    EMBEDDING_SIMILARITY,
    UPSTREAM,
    completed_answer,
    rerank_answer,
)

DOCUMENTS = ["zero", "one", "two", "three"]


def request(**fields) -> RerankRequest:
    return validate_request(RerankRequest, {"model": "m", "query": "q", "documents": DOCUMENTS,
                                            **fields})


@pytest.mark.parametrize("fields, param", [
    ({"documents": []}, "documents"),
    ({"documents": "one document"}, "documents"),
    ({"documents": ["a", ""]}, "documents[1]"),
    ({"documents": ["a", {"text": ""}]}, "documents[1].text"),
    ({"documents": [{"title": "no text"}]}, "documents[0].text"),
    ({"documents": ["a", 5]}, "documents[1]"),
    ({"query": ""}, "query"),
    ({"query": None}, "query"),
    ({"top_n": 0}, "top_n"),
    ({"top_n": "two"}, "top_n"),
    ({"return_documents": "maybe"}, "return_documents"),
    ({"stream": True}, "stream"),
    ({"model": ""}, "model"),
])
def test_bad_requests_are_400_naming_the_parameter(fields, param):
    body = {"model": "m", "query": "q", "documents": DOCUMENTS, **fields}
    with pytest.raises(InvalidRequestError) as raised:
        validate_request(RerankRequest, body)
    assert raised.value.status == 400
    assert raised.value.param == param


def test_documents_may_be_strings_or_text_objects_and_unknown_fields_are_kept():
    parsed = request(documents=["plain", {"text": "object", "id": "doc-7"}], rank_fields=["x"])
    assert parsed.texts() == ["plain", "object"]
    assert parsed.unknown_fields() == ["rank_fields"]


def test_answer_is_sorted_best_first_with_usage_and_an_id():
    answer = rerank_answer("m", [0.1, 0.9, -0.5, 0.4], request(), prompt_tokens=12)
    assert [r["index"] for r in answer["results"]] == [1, 3, 0, 2]
    assert [r["relevance_score"] for r in answer["results"]] == [0.9, 0.4, 0.1, -0.5]
    assert all("document" not in r for r in answer["results"])
    assert answer["usage"] == {"prompt_tokens": 12, "total_tokens": 12}
    assert answer["model"] == "m" and answer["id"].startswith("rerank-")


def test_top_n_and_return_documents():
    answer = rerank_answer("m", [0.1, 0.9, -0.5, 0.4], request(top_n=2, return_documents=True), 3)
    assert answer["results"] == [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "one"}},
        {"index": 3, "relevance_score": 0.4, "document": {"text": "three"}},
    ]
    # top_n larger than the documents returns them all
    assert len(rerank_answer("m", [1, 2, 3, 4], request(top_n=10), 3)["results"]) == 4


def test_equal_scores_keep_the_documents_order():
    answer = rerank_answer("m", [0.5, 0.7, 0.5, 0.5], request(), 1)
    assert [r["index"] for r in answer["results"]] == [1, 0, 2, 3]


def test_an_upstream_answer_in_llamacpp_dialect_is_completed():
    # llama.cpp: no id, no documents, `object`, its own top_n handling
    payload = {"model": "gguf", "object": "list", "usage": {"prompt_tokens": 5, "total_tokens": 5},
               "results": [{"index": 2, "relevance_score": 0.2},
                           {"index": 0, "relevance_score": 0.8},
                           {"index": 3, "relevance_score": 0.5}]}
    answer = completed_answer("served", payload, request(top_n=2, return_documents=True))
    assert answer["model"] == "served" and answer["id"].startswith("rerank-")
    assert answer["results"] == [
        {"index": 0, "relevance_score": 0.8, "document": {"text": "zero"}},
        {"index": 3, "relevance_score": 0.5, "document": {"text": "three"}},
    ]
    assert answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


@pytest.mark.parametrize("payload", [
    {"data": []},
    {"results": [{"index": 4, "relevance_score": 0.1}]},
    {"results": [{"index": -1, "relevance_score": 0.1}]},
    {"results": [{"index": 0, "relevance_score": "high"}]},
    {"results": [{"index": 0, "relevance_score": True}]},
    {"results": ["0"]},
])
def test_an_upstream_answer_that_names_no_document_is_a_502(payload):
    with pytest.raises(MalformedUpstreamError) as raised:
        completed_answer("served", payload, request())
    assert raised.value.status == 502


@pytest.fixture(scope="module")
def registry():
    config = parse_config({"models": [
        {"name": "chat", "engine": "llamacpp", "path": "chat.gguf"},
        {"name": "gguf-reranker", "engine": "llamacpp", "path": "r.gguf", "reranking": True},
        {"name": "auto-reranker", "engine": "auto", "path": "r.gguf",
         "options": {"reranking": True}},
        {"name": "embed", "engine": "sentence-transformers", "path": "e"},
        {"name": "cross", "engine": "cross-encoder", "path": "c", "aliases": ["bge-reranker"]},
        {"name": "vllm-upstream", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "vendor", "engine": "openai", "vendor": "deepseek", "api_key": "k"},
    ]})
    return build_state(config).registry


def test_rerankers_embedding_models_and_plain_upstreams_serve_rerank(registry):
    assert registry.for_rerank("bge-reranker").name == "cross"
    served = {name: registry.get(name).capabilities.rerank for name in
              ("cross", "gguf-reranker", "auto-reranker", "embed", "vllm-upstream", "vendor",
               "chat")}
    assert served == {"cross": CROSS_ENCODER, "gguf-reranker": CROSS_ENCODER,
                      "auto-reranker": CROSS_ENCODER,
                      "embed": EMBEDDING_SIMILARITY, "vllm-upstream": UPSTREAM,
                      "vendor": None, "chat": None}
    assert {registry.get(n).kind for n in ("cross", "gguf-reranker")} == {"rerank"}


@pytest.mark.parametrize("name", ["chat", "vendor"])
def test_a_model_that_cannot_rerank_is_400_naming_it(registry, name):
    with pytest.raises(InvalidRequestError) as raised:
        registry.for_rerank(name)
    assert raised.value.param == "model" and f"'{name}'" in raised.value.message
    assert "cannot rerank" in raised.value.message


def test_an_unknown_model_is_404(registry):
    with pytest.raises(ModelNotFoundError):
        registry.for_rerank("nope")


@pytest.mark.parametrize("name", ["cross", "gguf-reranker", "auto-reranker"])
def test_a_reranker_cannot_chat_or_embed(registry, name):
    with pytest.raises(InvalidRequestError, match="is a reranker; use /v1/rerank"):
        registry.for_chat(name)
    with pytest.raises(InvalidRequestError, match="is a rerank model and does not serve"):
        registry.for_embeddings(name)


def test_a_chat_model_cannot_fall_back_to_a_reranker():
    config = parse_config({"models": [
        {"name": "online", "engine": "openai", "base_url": "http://127.0.0.1:9/v1",
         "fallbacks": ["cross"]},
        {"name": "cross", "engine": "cross-encoder", "path": "c"},
    ]})
    with pytest.raises(Exception, match="one is a chat model and the other a rerank model"):
        build_state(config)
