"""The embedding engine (engines/text_encoders.py: sentence-transformers or modelport's own
BERT encoder) with micro-batching of concurrent requests.

Requests that arrive while a batch is encoding are gathered into the next batch, so
many small concurrent requests cost a few forward passes instead of one each. One thread
owns the tokenizer and the model (engines/batching.py says why): each request is
tokenized exactly once, on that thread, and its token ids are what the forward pass
runs on; the event loop never touches the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from modelport.config import SentenceTransformersModel
from modelport.engines.protocol import Embedded
from modelport.engines.batching import BatchQueue, Job, padded_batches
from modelport.engines.text_encoders import open_encoder
from modelport.errors import ContextLengthError, InvalidRequestError

# Texts gathered per trip to the engine thread, in forward batches. Gathering several
# lets the thread sort them by length (less padding) and costs one hand-off, not many.
GATHER_BATCHES = 4
# The fixed cost of one forward pass in tokens' worth of compute, per torch thread:
# measured for MiniLM on one CPU thread, a pass costs ~9 ms plus ~0.25 ms per (padded)
# token. More threads share the per-token work but not the fixed part (two threads on two
# cores: ~12 ms plus ~0.16 ms a token), so a pass is worth proportionally more tokens. A
# gathered batch is split where the padding saved outweighs another pass.
FORWARD_COST_TOKENS_PER_THREAD = 36

Inputs = Union[Sequence[str], Sequence[Sequence[int]]]


@dataclass
class _Job(Job):
    is_ids: bool = False  # inputs are token ids without special tokens, not texts
    # What each input is called in an error (and its `param`); `input[i]` when not given.
    labels: Sequence[str] | None = None


class EmbeddingEngine:
    def __init__(self, model: SentenceTransformersModel, path: Path) -> None:
        self.name = model.name
        self.encoder = open_encoder(model, path)
        self.batch_size = model.batch_size
        self.threads = model.threads
        limit = self.encoder.max_seq_length
        self.max_tokens = min(model.max_input_tokens or limit, limit)
        self.dimensions = self.encoder.dimensions
        self.vocab_size = self.encoder.vocab_size
        self._pad_id = self.encoder.pad_id
        self._prefix, self._suffix = self._special_tokens()
        self.batches = BatchQueue(
            model.name, self._run, gather=model.batch_size * GATHER_BATCHES,
            max_waiting=model.max_queue + model.batch_size, threads=model.threads,
            thread_name="embedding")

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text ([CLS] ... [SEP] for BERT)."""
        plain, = self.encoder.token_ids(["a"], special_tokens=False)
        full, = self.encoder.token_ids(["a"])
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []

    async def start(self) -> None:
        await self.batches.start()

    async def stop(self) -> None:
        await self.batches.stop()

    async def embed(self, inputs: Inputs, labels: Sequence[str] | None = None) -> Embedded:
        """Vectors for texts, or for token-id sequences (special tokens are added here).
        `labels` name the inputs in errors (e.g. "query", "documents[3]" for a rerank)."""
        is_ids = bool(inputs) and not isinstance(inputs[0], str)
        if is_ids:
            self._check_ids(inputs)  # type: ignore[arg-type]
        return await self.batches.submit(_Job(list(inputs), is_ids=is_ids, labels=labels))

    def _check_ids(self, batches: Sequence[Sequence[int]]) -> None:
        for ids in batches:
            if any(not 0 <= token < self.vocab_size for token in ids):
                raise InvalidRequestError(
                    f"token ids must be in [0, {self.vocab_size}) for this model", param="input"
                )

    # Everything below runs on the engine thread only.

    def _run(self, jobs: list[_Job], settle) -> None:  # noqa: ANN001
        """Embed the jobs' inputs together; settle each job as soon as its vectors are in,
        so that its client can send its next request while the rest still encode."""
        accepted: list[list[int]] = []
        owners: list[tuple[_Job, int]] = []  # per accepted sequence: its job, its row there
        waiting: dict[int, list] = {}  # id(job) -> [sequences left, vectors, prompt tokens]
        for job, sequences in zip(jobs, self._token_ids(jobs)):
            error = self._length_error(sequences, job.labels)
            if error is not None:
                settle(job, error)
                continue
            vectors = np.empty((len(sequences), self.dimensions), dtype=np.float32)
            waiting[id(job)] = [len(sequences), vectors, sum(map(len, sequences))]
            owners.extend((job, row) for row in range(len(sequences)))
            accepted.extend(sequences)
        for indices, vectors in self._forward(accepted):
            for index, vector in zip(indices, vectors):
                job, row = owners[index]
                entry = waiting[id(job)]
                entry[1][row] = vector
                entry[0] -= 1
                if entry[0] == 0:
                    settle(job, Embedded(entry[1], entry[2]))

    def _token_ids(self, jobs: list[_Job]) -> list[list[list[int]]]:
        """Per job, the token ids of each input with special tokens, in one tokenizer call."""
        prompt = self.encoder.prompt
        texts = [prompt + text for job in jobs if not job.is_ids for text in job.inputs]
        encoded = iter(self.encoder.token_ids(texts) if texts else [])
        per_job = []
        for job in jobs:
            if job.is_ids:
                per_job.append([self._prefix + list(ids) + self._suffix for ids in job.inputs])
            else:
                per_job.append([next(encoded) for _ in job.inputs])
        return per_job

    def _length_error(self, sequences: list[list[int]],
                      labels: Sequence[str] | None) -> ContextLengthError | None:
        for index, ids in enumerate(sequences):
            if len(ids) > self.max_tokens:
                return ContextLengthError(
                    f"{labels[index] if labels else f'input[{index}]'} has {len(ids)} tokens; "
                    f"this model's maximum is {self.max_tokens} (it is not truncated: "
                    "shorten or split the text)",
                    param=labels[index] if labels else "input",
                )
        return None

    def _forward(self, sequences: list[list[int]]):  # noqa: ANN202 - a generator
        """(indices, vectors) per forward pass, over chunks of similar lengths."""
        import torch

        with torch.inference_mode():
            for chunk, input_ids, mask in padded_batches(
                    sequences, self.batch_size,
                    FORWARD_COST_TOKENS_PER_THREAD * torch.get_num_threads(), self._pad_id):
                embeddings = self.encoder.forward(input_ids, mask)
                yield chunk, embeddings.float().cpu().numpy()
