#!/usr/bin/env python
"""Embedding throughput of the default embedding model: modelport vs sentence-transformers.

Targets compared in one run, cell by cell, on the same texts:
  in-process  SentenceTransformer.encode(texts, batch_size=32) in this process: the limit
  modelport   a real `modelport serve` with the default models; CLIENTS concurrent clients
              send the texts TEXTS_PER_REQUEST at a time (gateway -> embedding worker)
  ceiling     the embedding engine's own batching (length-sorted forward passes, the same
              cost model as the worker) in this process, given the texts in arrival order
              CLIENTS x TEXTS_PER_REQUEST at a time: no server can batch more than that many
              texts at once, so this bounds what modelport can reach without any HTTP cost

A cell is (clients, texts per request). Each round runs every cell's two targets back to
back, alternating which goes first, so drift in the machine's speed hits both alike. The
ratio is modelport texts/s over in-process texts/s, from the summed times of all rounds.
A request counts as an error unless it answers 200 with one vector per text.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, print_table, write_result  # noqa: E402

from modelport.config.defaults import DEFAULT_CONFIG, DEFAULT_EMBEDDING_MODEL  # noqa: E402

VOCABULARY = (
    "the a of to and in is that for on with as by at from this be are was it an or which "
    "model server request vector search document query answer retrieval index chunk text "
    "language system user data network memory process thread batch token client gateway "
    "river mountain city market library history science music garden winter morning light "
    "quickly slowly carefully together often never always because although while after"
).split()


def make_texts(count: int, min_words: int, max_words: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of varied length, like a mix of queries and passages."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(VOCABULARY, k=rng.randint(min_words, max_words))) + "."
            for _ in range(count)]


def in_process(model, texts: list[str]) -> dict:
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    wall = time.perf_counter() - started
    return {"texts": len(vectors), "errors": 0, "wall_s": wall}


async def through_modelport(url: str, texts: list[str], clients: int, per_request: int) -> dict:
    bodies = [{"model": DEFAULT_EMBEDDING_MODEL, "input": texts[i:i + per_request]}
              for i in range(0, len(texts), per_request)]
    pending = iter(bodies)
    done = 0
    errors: list[str] = []

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for body in pending:  # clients share one iterator: each body is sent once
            try:
                async with session.post(url, json=body) as response:
                    raw = await response.read()
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {raw[:80]!r}")
                elif len(orjson.loads(raw)["data"]) != len(body["input"]):
                    errors.append("wrong number of vectors")
                else:
                    done += len(body["input"])
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as error:
                errors.append(type(error).__name__)

    # One connection per client, as separate client processes would have.
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"texts": done, "errors": len(errors), "error_kinds": sorted(set(errors)),
            "wall_s": wall}


def engine_ceiling(model, token_ids: list[list[int]], at_once: int) -> dict:
    import torch

    from modelport.engines.batching import padded_batches
    from modelport.engines.embeddings import FORWARD_COST_TOKENS_PER_THREAD

    forward_cost = FORWARD_COST_TOKENS_PER_THREAD * torch.get_num_threads()
    pad_id = model.tokenizer.pad_token_id or 0
    started = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(token_ids), at_once):
            for _, input_ids, mask in padded_batches(token_ids[first:first + at_once], 32,
                                                     forward_cost, pad_id):
                features = {"input_ids": input_ids, "attention_mask": mask}
                if "token_type_ids" in model.tokenizer.model_input_names:
                    features["token_type_ids"] = torch.zeros_like(input_ids)
                model(features)["sentence_embedding"].numpy()
    return {"texts": len(token_ids), "errors": 0, "wall_s": time.perf_counter() - started}


def load_in_process_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from modelport.config.locations import resolve_location

    entry = next(m for m in DEFAULT_CONFIG["models"] if m["name"] == DEFAULT_EMBEDDING_MODEL)
    path = resolve_location(entry["path"], Path("."), DEFAULT_EMBEDDING_MODEL)
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients, per cell")
    parser.add_argument("--per-request", default="1,16", help="texts per request, per cell")
    parser.add_argument("--texts", type=int, default=1024, help="texts embedded per cell and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every cell")
    parser.add_argument("--min-words", type=int, default=5, help="shortest text, in words")
    parser.add_argument("--max-words", type=int, default=60, help="longest text, in words")
    parser.add_argument("--in-process-threads", type=int, default=0,
                        help="torch threads of the in-process baseline (0: torch's default)")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="the embedding model's `threads` setting (0: its default)")
    args = parser.parse_args()

    texts = make_texts(args.texts, args.min_words, args.max_words)
    cells = [(int(c), int(k)) for c in args.clients.split(",") for k in args.per_request.split(",")]
    model = load_in_process_model()
    import torch  # loaded with the model

    if args.in_process_threads:
        torch.set_num_threads(args.in_process_threads)
    token_ids = model.tokenizer(texts, add_special_tokens=True, truncation=False,
                                padding=False)["input_ids"]
    tokens = [len(ids) for ids in token_ids]
    in_process(model, texts[:64])  # warm-up
    models = [dict(m) for m in DEFAULT_CONFIG["models"]]
    if args.worker_threads:
        for entry in models:
            if entry["name"] == DEFAULT_EMBEDDING_MODEL:
                entry["threads"] = args.worker_threads
    serve = ServeProcess(models).start()
    url = serve.url + "/v1/embeddings"
    runs: dict[tuple[int, int], dict[str, list[dict]]] = {
        cell: {"in-process": [], "modelport": [], "ceiling": []} for cell in cells}
    try:
        asyncio.run(through_modelport(url, texts[:64], 4, 4))  # warm-up: connections, worker
        for round_index in range(args.rounds):
            for cell_index, (clients, per_request) in enumerate(cells):
                order = ["in-process", "modelport", "ceiling"]
                if (round_index + cell_index) % 2:
                    order.reverse()
                for target in order:
                    if target == "in-process":
                        result = in_process(model, texts)
                    elif target == "ceiling":
                        result = engine_ceiling(model, token_ids, clients * per_request)
                    else:
                        result = asyncio.run(through_modelport(url, texts, clients, per_request))
                    runs[(clients, per_request)][target].append(result)
    finally:
        serve.stop()

    results = []
    for (clients, per_request), by_target in runs.items():
        row: dict = {"clients": clients, "texts_per_request": per_request}
        for target, rounds in by_target.items():
            done = sum(r["texts"] for r in rounds)
            wall = sum(r["wall_s"] for r in rounds)
            row[target] = {
                "texts_per_s": round(done / wall, 1) if wall else 0.0,
                "errors": sum(r["errors"] for r in rounds),
                "error_kinds": sorted({k for r in rounds for k in r.get("error_kinds", [])}),
                "rounds_texts_per_s": [round(r["texts"] / r["wall_s"], 1) for r in rounds],
            }
        row["ratio"] = round(row["modelport"]["texts_per_s"] / row["in-process"]["texts_per_s"], 3)
        row["ceiling_ratio"] = round(
            row["ceiling"]["texts_per_s"] / row["in-process"]["texts_per_s"], 3)
        results.append(row)

    print_table(
        f"texts/s, {args.texts} texts of {statistics.median(tokens)} tokens (median; "
        f"{min(tokens)}-{max(tokens)}), {args.rounds} round(s)",
        ["clients", "texts/request", "modelport", "in-process", "ratio", "ceiling",
         "ceiling ratio", "errors"],
        [[r["clients"], r["texts_per_request"], r["modelport"]["texts_per_s"],
          r["in-process"]["texts_per_s"], r["ratio"], r["ceiling"]["texts_per_s"],
          r["ceiling_ratio"], r["modelport"]["errors"]] for r in results])
    report = {"settings": vars(args),
              "tokens_per_text": {"min": min(tokens), "median": statistics.median(tokens),
                                  "max": max(tokens)},
              "startup_to_ready_s": round(serve.ready_after_s or 0.0, 2),
              "in_process_torch_threads": torch.get_num_threads(),
              "results": results}
    print(f"\nwritten: {write_result('embedding_throughput', report)}")


if __name__ == "__main__":
    main()
