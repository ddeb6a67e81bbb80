#!/usr/bin/env python
"""Rerank latency: 1 query x 64 documents, through modelport vs the same model in-process.

Models (both served by one real `modelport serve`):
  cross-encoder  a sentence-transformers CrossEncoder (MiniLM-L6, 22M parameters; the one
                 the tests train from the packaged all-MiniLM-L6-v2, or --cross-encoder PATH)
  embedding      the default embedding model, all-MiniLM-L6-v2, scoring by cosine similarity

Targets, per model, on the same query and documents:
  in-process  CrossEncoder.predict(pairs, batch_size=32), or SentenceTransformer.encode of
              the query and the documents then cosine similarity, in this process
  modelport   POST /v1/rerank, one request at a time (client -> gateway -> worker)

Rounds alternate which target goes first, so drift in the machine's speed hits both alike.
A request counts as an error unless it answers 200 with one result per document.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

# As in modelport's workers (workers/runner.py): OpenMP threads spin briefly, not for
# 300,000 turns, so both targets run torch the same way.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
from common import ServeProcess, print_table, summarize_ms, write_result  # noqa: E402
from embedding_throughput import make_texts  # noqa: E402

from modelport.config.defaults import DEFAULT_CONFIG, DEFAULT_EMBEDDING_MODEL  # noqa: E402
from modelport.config.locations import resolve_location  # noqa: E402

CROSS_ENCODER = "bench-cross-encoder"
def cross_encoder_path(given: str | None) -> Path:
    if given:
        return Path(given)
    from fixtures.cross_encoder import minilm_cross_encoder_path

    return minilm_cross_encoder_path()


def in_process_scorer(kind: str, path: Path):  # noqa: ANN201
    if kind == "cross-encoder":
        from sentence_transformers import CrossEncoder

        encoder = CrossEncoder(str(path), local_files_only=True)
        return lambda query, documents: encoder.predict(
            [(query, d) for d in documents], batch_size=32, show_progress_bar=False)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), local_files_only=True)

    def cosine(query: str, documents: list[str]) -> np.ndarray:
        vectors = model.encode([query, *documents], batch_size=32, convert_to_numpy=True)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return unit[1:] @ unit[0]

    return cosine


def time_in_process(score, query: str, documents: list[str]) -> float:
    started = time.perf_counter()
    score(query, documents)
    return time.perf_counter() - started


def time_modelport(client: httpx.Client, model: str, query: str,
                   documents: list[str]) -> float | None:
    started = time.perf_counter()
    response = client.post("/v1/rerank", json={"model": model, "query": query,
                                               "documents": documents})
    elapsed = time.perf_counter() - started
    ok = response.status_code == 200 and len(response.json()["results"]) == len(documents)
    return elapsed if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=64, help="documents per request")
    parser.add_argument("--rounds", type=int, default=40, help="requests per target and model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per target")
    parser.add_argument("--min-words", type=int, default=20, help="shortest document")
    parser.add_argument("--max-words", type=int, default=60, help="longest document")
    parser.add_argument("--cross-encoder", help="CrossEncoder folder (default: the tests' one)")
    parser.add_argument("--models", default="cross-encoder,embedding")
    args = parser.parse_args()

    kinds = [k for k in args.models.split(",") if k]
    embedding = next(m for m in DEFAULT_CONFIG["models"] if m["name"] == DEFAULT_EMBEDDING_MODEL)
    paths = {"embedding": resolve_location(embedding["path"], Path("."), embedding["name"])}
    served = {"embedding": DEFAULT_EMBEDDING_MODEL}
    models = [embedding]
    if "cross-encoder" in kinds:
        paths["cross-encoder"] = cross_encoder_path(args.cross_encoder)
        served["cross-encoder"] = CROSS_ENCODER
        models.append({"name": CROSS_ENCODER, "engine": "cross-encoder",
                       "path": str(paths["cross-encoder"])})
    query = "which search index answers a retrieval query for a document"
    documents = make_texts(args.documents, args.min_words, args.max_words)

    serve = ServeProcess(models).start()
    report: dict = {"documents": args.documents, "rounds": args.rounds,
                    "words_per_document": [args.min_words, args.max_words], "results": {}}
    rows = []
    try:
        with httpx.Client(base_url=serve.url, timeout=120) as client:
            for kind in kinds:
                score = in_process_scorer(kind, paths[kind])
                for _ in range(args.warmup):
                    time_in_process(score, query, documents)
                    time_modelport(client, served[kind], query, documents)
                times: dict[str, list[float]] = {"in-process": [], "modelport": []}
                errors = 0
                for round_ in range(args.rounds):
                    order = ["in-process", "modelport"][:: 1 if round_ % 2 == 0 else -1]
                    for target in order:
                        if target == "in-process":
                            times[target].append(time_in_process(score, query, documents))
                            continue
                        elapsed = time_modelport(client, served[kind], query, documents)
                        if elapsed is None:
                            errors += 1
                        else:
                            times[target].append(elapsed)
                summary = {target: summarize_ms(values) for target, values in times.items()}
                added = round(summary["modelport"]["p50"] - summary["in-process"]["p50"], 2)
                report["results"][kind] = {**summary, "added_p50_ms": added, "errors": errors}
                for target in ("in-process", "modelport"):
                    rows.append([kind, target, summary[target]["p50"], summary[target]["p99"],
                                 errors if target == "modelport" else "-"])
                del score
    finally:
        serve.stop()
    print_table(f"rerank latency, 1 query x {args.documents} documents ({args.rounds} requests)",
                ["model", "target", "p50 ms", "p99 ms", "errors"], rows)
    for kind, result in report["results"].items():
        print(f"{kind}: modelport adds {result['added_p50_ms']} ms at p50")
    print(f"\nwritten: {write_result('rerank', report)}")


if __name__ == "__main__":
    main()
