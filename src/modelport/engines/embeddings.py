"""sentence-transformers embedding engine with micro-batching of concurrent requests.

Requests that arrive while a batch is encoding are gathered into the next batch, so
many small concurrent requests cost a few forward passes instead of one each.

One thread owns the tokenizer and the model. A fast tokenizer keeps its truncation and
padding settings in shared Rust state that every call rewrites, so two threads calling
it at once corrupt each other's batches ("Unable to create tensor"). Each request is
therefore tokenized exactly once, on that thread, and its token ids are what the
forward pass runs on; the event loop never touches the tokenizer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from modelport.config import SentenceTransformersModel
from modelport.errors import ContextLengthError, InvalidRequestError, RateLimitError

logger = logging.getLogger("modelport.embeddings")

# Texts gathered per trip to the engine thread, in forward batches. Gathering several
# lets the thread sort them by length (less padding) and costs one hand-off, not many.
GATHER_BATCHES = 4
# The fixed cost of one forward pass in tokens' worth of compute: measured for MiniLM on
# one CPU thread, a pass costs ~9 ms plus ~0.25 ms per (padded) token. A gathered batch
# is split where the padding saved outweighs another pass.
FORWARD_COST_TOKENS = 36

Inputs = Union[Sequence[str], Sequence[Sequence[int]]]


@dataclass
class Embedded:
    vectors: np.ndarray  # (len(inputs), dimensions) float32
    prompt_tokens: int


@dataclass
class _Job:
    inputs: list  # texts, or token ids without special tokens
    is_ids: bool
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    settled: bool = False  # written by the engine thread only


def _settle(future: asyncio.Future, outcome: Embedded | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _set_torch_threads(threads: int | None) -> None:
    """torch's own default (a thread per core) unless the model's `threads` says otherwise.

    Measured on 2 cores: with the machine otherwise idle, 2 threads gave 100-155 texts/s
    at 16 clients and 1 thread 79-97; on a machine busy with other work, 1 thread did better
    (a pass waits on the thread that other processes pushed off its core), hence the setting."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def split_by_length(lengths: list[int], max_batch: int, forward_cost: int) -> list[tuple[int, int]]:
    """[start, end) chunks of `lengths` (sorted longest first) that minimise the tokens
    computed, padding included, plus `forward_cost` per chunk; at most `max_batch` each."""
    best = [0] + [float("inf")] * len(lengths)
    cut = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(max(0, end - max_batch), end):
            cost = best[start] + forward_cost + (end - start) * lengths[start]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks = []
    end = len(lengths)
    while end:
        chunks.append((cut[end], end))
        end = cut[end]
    return chunks[::-1]


class EmbeddingEngine:
    def __init__(self, model: SentenceTransformersModel, path: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        device = None if model.device == "auto" else model.device
        self.name = model.name
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self.batch_size = model.batch_size
        self.threads = model.threads
        limit = self.model.max_seq_length or 512
        self.max_tokens = min(model.max_input_tokens or limit, limit)
        self.dimensions = self.model.get_embedding_dimension() if hasattr(
            self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension()
        self.vocab_size = self.tokenizer.vocab_size
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._type_ids = "token_type_ids" in self.tokenizer.model_input_names
        self._prefix, self._suffix = self._special_tokens()
        # ST's encode() prepends the model's default prompt, if it names one; so do we.
        default_prompt = getattr(self.model, "default_prompt_name", None)
        self._prompt = (self.model.prompts or {}).get(default_prompt, "") if default_prompt else ""
        self.max_waiting = model.max_queue + model.batch_size
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self.in_flight = 0

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text ([CLS] ... [SEP] for BERT)."""
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding",
                                            initializer=_set_torch_threads,
                                            initargs=(self.threads,))
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, inputs: Inputs) -> Embedded:
        """Vectors for texts, or for token-id sequences (special tokens are added here)."""
        assert self._queue is not None, "engine not started"
        is_ids = bool(inputs) and not isinstance(inputs[0], str)
        if is_ids:
            self._check_ids(inputs)  # type: ignore[arg-type]
        if self.in_flight >= self.max_waiting:
            raise RateLimitError(
                f"model '{self.name}' queue is full", headers={"Retry-After": "1"}
            )
        job = _Job(list(inputs), is_ids)
        self.in_flight += 1
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self.in_flight -= 1

    def _check_ids(self, batches: Sequence[Sequence[int]]) -> None:
        for ids in batches:
            if any(not 0 <= token < self.vocab_size for token in ids):
                raise InvalidRequestError(
                    f"token ids must be in [0, {self.vocab_size}) for this model", param="input"
                )

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        gather = self.batch_size * GATHER_BATCHES
        while True:
            jobs = [await self._queue.get()]
            self._gather(jobs, len(jobs[0].inputs), gather)
            live = [job for job in jobs if not job.future.done()]
            if live:
                await loop.run_in_executor(self._executor, self._run_isolated, live, loop)

    def _gather(self, jobs: list[_Job], size: int, limit: int) -> int:
        assert self._queue is not None
        while not self._queue.empty() and size < limit:
            job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.inputs)
        return size

    # Everything below runs on the engine thread only.

    def _run_isolated(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """Settle every job; when the batch fails, run the jobs not yet settled each
        alone, so that only the job that caused the failure gets it."""
        def settle(job: _Job, outcome: Embedded | BaseException) -> None:
            job.settled = True
            loop.call_soon_threadsafe(_settle, job.future, outcome)

        try:
            self._run(jobs, settle)
            return
        except Exception as error:  # noqa: BLE001 - handed to the request(s) it belongs to
            if len(jobs) == 1:
                settle(jobs[0], error)
                return
            logger.warning("embedding batch of %d requests failed (%r); retrying each alone",
                           len(jobs), error)
        for job in jobs:
            if job.settled:
                continue
            try:
                self._run([job], settle)
            except Exception as error:  # noqa: BLE001
                settle(job, error)

    def _run(self, jobs: list[_Job], settle) -> None:  # noqa: ANN001
        """Embed the jobs' inputs together; settle each job as soon as its vectors are in,
        so that its client can send its next request while the rest still encode."""
        accepted: list[list[int]] = []
        owners: list[tuple[_Job, int]] = []  # per accepted sequence: its job, its row there
        waiting: dict[int, list] = {}  # id(job) -> [sequences left, vectors, prompt tokens]
        for job, sequences in zip(jobs, self._token_ids(jobs)):
            error = self._length_error(sequences)
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
        texts = [self._prompt + text for job in jobs if not job.is_ids for text in job.inputs]
        encoded = iter(self.tokenizer(
            texts, add_special_tokens=True, truncation=False, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"] if texts else [])
        per_job = []
        for job in jobs:
            if job.is_ids:
                per_job.append([self._prefix + list(ids) + self._suffix for ids in job.inputs])
            else:
                per_job.append([next(encoded) for _ in job.inputs])
        return per_job

    def _length_error(self, sequences: list[list[int]]) -> ContextLengthError | None:
        for index, ids in enumerate(sequences):
            if len(ids) > self.max_tokens:
                return ContextLengthError(
                    f"input[{index}] has {len(ids)} tokens; this model's maximum is "
                    f"{self.max_tokens} (it is not truncated: shorten or split the text)",
                    param="input",
                )
        return None

    def _forward(self, sequences: list[list[int]]):  # noqa: ANN202 - a generator
        """(indices, vectors) per forward pass, over chunks of similar lengths."""
        import torch

        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        lengths = [len(sequences[i]) for i in order]
        with torch.inference_mode():
            for start, end in split_by_length(lengths, self.batch_size, FORWARD_COST_TOKENS):
                chunk = order[start:end]
                width = lengths[start]
                input_ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, index in enumerate(chunk):
                    ids = sequences[index]
                    input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[row, :len(ids)] = 1
                features = {"input_ids": input_ids, "attention_mask": mask}
                if self._type_ids:
                    features["token_type_ids"] = torch.zeros_like(input_ids)
                features = {k: v.to(self.model.device) for k, v in features.items()}
                embeddings = self.model(features)["sentence_embedding"]
                yield chunk, embeddings.float().cpu().numpy()
