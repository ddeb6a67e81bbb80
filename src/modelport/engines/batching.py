"""One engine thread fed by a queue: requests that arrive while a batch runs are gathered
into the next one (the embedding and the cross-encoder engines).

The thread owns the tokenizer and the model: a fast tokenizer keeps its truncation and
padding settings in shared Rust state that every call rewrites, so two threads calling
it at once corrupt each other's batches ("Unable to create tensor"). The event loop only
queues jobs and waits for their futures.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.admission.threaded import Admission

logger = logging.getLogger("modelport.engines")

Settle = Callable[["Job", Any], None]
# Runs on the engine thread: settles every job it was given (a result or an exception),
# or raises, and then the jobs it left unsettled are run again one by one.
RunBatch = Callable[[list["Job"], Settle], None]


@dataclass
class Job:
    inputs: list  # texts, token ids or documents: what `size` counts
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    settled: bool = False  # written by the engine thread only


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _set_torch_threads(name: str, threads: int | None) -> None:
    """The worker's default (one per usable CPU, through OMP_NUM_THREADS: see
    workers/runner.py) unless the model's `threads` says otherwise.

    Measured on 2 cores: with the machine otherwise idle, 2 threads gave 100-155 texts/s
    at 16 clients and 1 thread 79-97; on a machine busy with other work, 1 thread did better
    (a pass waits on the thread that other processes pushed off its core), hence the setting."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    # What the forward passes will use, as torch reports it (`modelport check` and tests).
    print(f"modelport worker '{name}': torch uses {torch.get_num_threads()} thread(s)",
          flush=True)


def load_offline(class_name: str, model: Any, path: Path) -> Any:
    """A sentence-transformers `class_name` (SentenceTransformer, CrossEncoder) from local
    files only, on the model's configured device, ready for inference."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import sentence_transformers

    device = None if model.device == "auto" else model.device
    loaded = getattr(sentence_transformers, class_name)(str(path), device=device,
                                                        local_files_only=True)
    loaded.eval()
    return loaded


class BatchQueue:
    """Jobs in, settled futures out; `gather` bounds the inputs per trip to the thread."""

    def __init__(self, name: str, run: RunBatch, *, gather: int, max_waiting: int,
                 threads: int | None, thread_name: str) -> None:
        self.name = name
        self._run = run
        self._gather_limit = gather
        # Every request counts from its arrival to its answer: gathered jobs wait in
        # the batch queue below, not in the admission's own queue.
        self.admission = Admission(name, max_waiting)
        self._threads = threads
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name,
                                            initializer=_set_torch_threads,
                                            initargs=(self.name, self._threads))
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, job: Job) -> Any:
        """The job's result, or 429 at once when `max_waiting` requests are already in."""
        assert self._queue is not None, "engine not started"
        if not self.admission.try_acquire():
            raise self.admission.refusal()
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self.admission.release()

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].inputs)
            while not self._queue.empty() and size < self._gather_limit:
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.inputs)
            live = [job for job in jobs if not job.future.done()]
            if live:
                await loop.run_in_executor(self._executor, self._run_isolated, live, loop)

    # On the engine thread.

    def _run_isolated(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """Settle every job; when the batch fails, run the jobs not yet settled each
        alone, so that only the job that caused the failure gets it."""
        def settle(job: Job, outcome: Any) -> None:
            job.settled = True
            loop.call_soon_threadsafe(_settle, job.future, outcome)

        try:
            self._run(jobs, settle)
            return
        except Exception as error:  # noqa: BLE001 - handed to the request(s) it belongs to
            if len(jobs) == 1:
                settle(jobs[0], error)
                return
            logger.warning("%s: batch of %d requests failed (%r); retrying each alone",
                           self.name, len(jobs), error)
        for job in jobs:
            if job.settled:
                continue
            try:
                self._run([job], settle)
            except Exception as error:  # noqa: BLE001
                settle(job, error)


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


def padded_batches(sequences: list[list[int]], max_batch: int, forward_cost: int,
                   pad_id: int):  # noqa: ANN201 - a generator
    """(indices, input_ids, attention_mask) per forward pass, over chunks of sequences of
    similar lengths (sorted longest first, so each chunk pads to its first)."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    lengths = [len(sequences[i]) for i in order]
    for start, end in split_by_length(lengths, max_batch, forward_cost):
        chunk = order[start:end]
        width = lengths[start]
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            ids = sequences[index]
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        yield chunk, input_ids, mask
