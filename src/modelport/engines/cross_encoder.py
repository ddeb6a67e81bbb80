"""sentence-transformers CrossEncoder reranking engine: scores (query, document) pairs.

Concurrent requests are gathered into one `predict` call on the engine thread (which
sorts the pairs by length and runs them in forward passes of `batch_size`), so the
scores are exactly those of the same model called in-process, activation included
(sigmoid for a one-label reranker such as bge-reranker or ms-marco MiniLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from modelport.config import CrossEncoderModel
from modelport.engines.batching import BatchQueue, Job, load_offline
from modelport.engines.protocol import Scored
from modelport.errors import ConfigError

# Pairs gathered per trip to the engine thread, in forward batches.
GATHER_BATCHES = 4


@dataclass
class _PairsJob(Job):
    query: str = ""


class CrossEncoderEngine:
    def __init__(self, model: CrossEncoderModel, path: Path) -> None:
        self.name = model.name
        self.encoder = load_offline("CrossEncoder", model, path)
        if self.encoder.num_labels != 1:
            raise ConfigError(
                f"model '{model.name}': {path} scores {self.encoder.num_labels} labels per "
                "pair; a reranker scores one (relevance)")
        limit = self.encoder.max_seq_length or 512
        self.max_tokens = min(model.max_input_tokens or limit, limit)
        self.encoder.max_seq_length = self.max_tokens
        self.tokenizer = self.encoder.tokenizer
        self.batch_size = model.batch_size
        self.batches = BatchQueue(
            model.name, self._run, gather=model.batch_size * GATHER_BATCHES,
            max_waiting=model.max_queue + model.batch_size, threads=model.threads,
            thread_name="cross-encoder")

    async def start(self) -> None:
        await self.batches.start()

    async def stop(self) -> None:
        await self.batches.stop()

    async def score(self, query: str, documents: Sequence[str]) -> Scored:
        return await self.batches.submit(_PairsJob(list(documents), query=query))

    # On the engine thread.

    def _run(self, jobs: list[_PairsJob], settle) -> None:  # noqa: ANN001
        pairs = [(job.query, document) for job in jobs for document in job.inputs]
        scores = self.encoder.predict(pairs, batch_size=self.batch_size,
                                      show_progress_bar=False, convert_to_numpy=True)
        tokens = self._pair_lengths(pairs)
        start = 0
        for job in jobs:
            end = start + len(job.inputs)
            settle(job, Scored(np.asarray(scores[start:end], dtype=np.float32),
                               int(sum(tokens[start:end]))))
            start = end

    def _pair_lengths(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Tokens per pair as the model reads it: both texts, special tokens, truncation."""
        encoded = self.tokenizer(
            [query for query, _ in pairs], [document for _, document in pairs],
            truncation=True, max_length=self.max_tokens, padding=False,
            return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]
