"""sentence-transformers embedding engine with micro-batching of concurrent requests.

Requests that arrive while a batch is encoding are gathered into the next batch, so
many small concurrent requests cost one forward pass instead of one each.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from modelport.config import SentenceTransformersModel
from modelport.errors import ContextLengthError, InvalidRequestError, RateLimitError


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class EmbeddingEngine:
    def __init__(self, model: SentenceTransformersModel, path: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        device = None if model.device == "auto" else model.device
        self.name = model.name
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.tokenizer = self.model.tokenizer
        self.batch_size = model.batch_size
        limit = self.model.max_seq_length or 512
        self.max_tokens = min(model.max_input_tokens or limit, limit)
        self.dimensions = self.model.get_embedding_dimension() if hasattr(
            self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension()
        self.max_waiting = model.max_queue + model.batch_size
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self.in_flight = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()

    def token_counts(self, texts: list[str]) -> list[int]:
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def decode_ids(self, batches: list[list[int]]) -> list[str]:
        vocab = self.tokenizer.vocab_size
        for ids in batches:
            if any(not 0 <= token < vocab for token in ids):
                raise InvalidRequestError(
                    f"token ids must be in [0, {vocab}) for this model", param="input"
                )
        return [self.tokenizer.decode(ids) for ids in batches]

    def check_lengths(self, texts: list[str]) -> int:
        counts = self.token_counts(texts)
        for index, count in enumerate(counts):
            if count > self.max_tokens:
                raise ContextLengthError(
                    f"input[{index}] has {count} tokens; this model's maximum is "
                    f"{self.max_tokens} (it is not truncated: shorten or split the text)",
                    param="input",
                )
        return sum(counts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        assert self._queue is not None, "engine not started"
        if self.in_flight >= self.max_waiting:
            raise RateLimitError(
                f"model '{self.name}' queue is full", headers={"Retry-After": "1"}
            )
        job = _Job(texts)
        self.in_flight += 1
        try:
            await self._queue.put(job)
            return await job.future
        finally:
            self.in_flight -= 1

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].texts)
            while not self._queue.empty() and size < self.batch_size:
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.texts)
            live = [job for job in jobs if not job.future.cancelled()]
            if not live:
                continue
            texts = [text for job in live for text in job.texts]
            try:
                vectors = await asyncio.to_thread(self._encode, texts)
            except Exception as error:  # noqa: BLE001 - handed to each waiting request
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            offset = 0
            for job in live:
                count = len(job.texts)
                if not job.future.done():
                    job.future.set_result(vectors[offset:offset + count])
                offset += count

    def _encode(self, texts: list[str]) -> list[list[float]]:
        array = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=False, show_progress_bar=False,
        )
        return array.astype("float32")
