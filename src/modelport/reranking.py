"""The /v1/rerank answer: built from scores by the workers, completed by the gateway.

Every engine's answer reaches the client in one shape (Cohere's and Jina's, which vLLM
and Xinference also serve): results sorted best first, `top_n` of them, each with the
document's text when `return_documents` asks for it, and usage.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from modelport.errors import MalformedUpstreamError
from modelport.protocol import RerankRequest

# How a model scores documents, as /v1/models reports it.
CROSS_ENCODER = "cross-encoder"
EMBEDDING_SIMILARITY = "embedding-cosine-similarity"
UPSTREAM = "upstream"


def rerank_answer(model: str, scores: Sequence[float], request: RerankRequest,
                  prompt_tokens: int) -> dict[str, Any]:
    ranked = [{"index": index, "relevance_score": float(score)}
              for index, score in enumerate(scores)]
    return _shaped(model, None, ranked, request,
                   {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})


def completed_answer(model: str, payload: dict[str, Any], request: RerankRequest) -> dict[str, Any]:
    """An upstream's answer (llama.cpp, vLLM, a vendor) in our shape; results that do not
    name a document of the request by index, with a numeric score, are a 502."""
    results = payload.get("results")
    count = len(request.documents)
    if not isinstance(results, list):
        raise MalformedUpstreamError(f"{model}: the rerank answer has no `results` list")
    ranked = []
    for item in results:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get("relevance_score") if isinstance(item, dict) else None
        if (not isinstance(index, int) or not 0 <= index < count
                or not isinstance(score, (int, float)) or isinstance(score, bool)):
            raise MalformedUpstreamError(
                f"{model}: the rerank answer has a result that is not "
                f"{{index in [0, {count}), relevance_score}}: {str(item)[:80]}")
        ranked.append({"index": index, "relevance_score": float(score)})
    usage = payload.get("usage")
    return _shaped(model, payload.get("id"), ranked, request,
                   usage if isinstance(usage, dict) else None)


def _shaped(model: str, answer_id: Any, ranked: list[dict[str, Any]], request: RerankRequest,
            usage: dict[str, Any] | None) -> dict[str, Any]:
    # A stable sort: equal scores keep the documents' order.
    ranked.sort(key=lambda result: -result["relevance_score"])
    if request.top_n is not None:
        del ranked[request.top_n:]
    if request.return_documents:
        texts = request.texts()
        for result in ranked:
            result["document"] = {"text": texts[result["index"]]}
    answer: dict[str, Any] = {
        "id": answer_id if isinstance(answer_id, str) and answer_id else f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "results": ranked,
    }
    if usage is not None:
        answer["usage"] = usage
    return answer
