"""Continuous batching for the transformers engine: one thread owns the model and runs one
forward pass per step for every request generating; requests that arrive meanwhile join
at the next step (their prompts prefilled together) and leave as soon as they are done.

Each request keeps its own options: the token of each row is chosen by its TokenChooser
(greedy rows in one argmax, seeded sampling and forced openings row by row), and its
TokenStream applies its stop sequences and end of sequence. A cancelled request leaves
at the next step; a queued one is dropped from the queue without running.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from modelport.engines.batching import split_by_length
from modelport.engines.transformers_kv import ModelStep, RowCache
from modelport.engines.transformers_requests import (
    Finished,
    Generation,
    Settle,
    TokenStream,
    failure,
)
from modelport.engines.transformers_sampling import TokenChooser

if TYPE_CHECKING:
    from modelport.admission.threaded import Admission
    from modelport.engines.transformers_loading import LoadedCheckpoint

log = logging.getLogger(__name__)

# How long an idle loop sleeps before it looks at the queue again (a submit wakes it).
_IDLE_POLL_SECONDS = 0.05
# A forward pass's fixed cost in prompt tokens (weights read once per pass): newcomers
# whose prompts differ in length by more than this are prefilled in separate passes
# rather than padded to the longest.
PREFILL_PASS_COST_TOKENS = 64


@dataclass
class _Row:
    generation: Generation
    stream: TokenStream
    chooser: TokenChooser
    generated: list[int]


@dataclass(frozen=True)
class BatchCounters:
    steps: int  # forward passes that decoded (prefills not counted)
    row_steps: int  # tokens decoded by them: each step adds its number of rows
    largest_batch: int


class BatchedDecoding:
    """The engine's batch loop thread; `start` hands it a generation already queued in
    the gate (admission/threaded.py), whose `limit` bounds the rows."""

    def __init__(self, checkpoint: LoadedCheckpoint, gate: Admission, settle: Settle,
                 decode: Callable[[list[int]], str], eos_ids: frozenset[int],
                 pad_id: int | None):
        self._model_defaults = checkpoint.model.generation_config
        self._step = ModelStep(checkpoint.model, checkpoint.input_device)
        self._gate = gate
        self._settle = settle
        self._decode = decode
        self._eos_ids = eos_ids
        self._pad_id = pad_id or 0  # any id: the mask hides padding
        self._rows: list[_Row] = []
        self._pending: list[Generation] = []  # taken from the queue, not prefilled yet
        self._cache: RowCache | None = None
        self._steps = self._row_steps = self._largest = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="transformers-batch",
                                        daemon=True)
        self._thread.start()

    def start(self, generation: Generation) -> None:
        self._wake.set()

    def counters(self) -> BatchCounters:
        return BatchCounters(self._steps, self._row_steps, self._largest)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=30)

    # -- on the batch thread ---------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        log.info("batch thread: torch uses %d thread(s)", torch.get_num_threads())
        with torch.inference_mode():
            while not self._closing:
                try:
                    self._iterate()
                except Exception as error:  # a fault of ours: end its requests, not the loop
                    log.exception("transformers batch loop failed")
                    self._fail_all(error)
                    self._fail_pending(error)
        closing = RuntimeError("the engine is shutting down")
        self._fail_all(closing)
        self._fail_pending(closing)

    def _iterate(self) -> None:
        self._retire_done()
        self._drop_cancelled_waiters()
        free = self._gate.limit - len(self._rows) - len(self._pending)
        self._pending.extend(self._gate.take(free))
        if self._pending:
            # One group of newcomers per step, so a long prompt's prefill holds the
            # running requests back for one pass, not for every newcomer's.
            self._join(self._next_group())
            self._retire_done()  # a newcomer may be done after its first token
        elif not self._rows:
            self._wake.wait(_IDLE_POLL_SECONDS)
            self._wake.clear()
            return
        if self._rows:
            self._decode_step()

    def _next_group(self) -> list[Generation]:
        """The next newcomers to prefill together: the longest waiting prompt and those
        close enough in length that padding them to it costs less than another pass."""
        self._pending.sort(key=lambda g: -g.prompt_tokens)
        lengths = [g.prompt_tokens for g in self._pending]
        start, end = split_by_length(lengths, len(lengths), PREFILL_PASS_COST_TOKENS)[0]
        group, self._pending = self._pending[start:end], self._pending[end:]
        return group

    def _retire_done(self) -> None:
        finished = [row.stream.done for row in self._rows]
        if not any(finished):
            return
        done = [row for row, end in zip(self._rows, finished) if end]
        kept = [i for i, end in enumerate(finished) if not end]
        self._rows = [self._rows[i] for i in kept]
        if kept:
            assert self._cache is not None
            self._cache.keep(kept)
        else:
            self._cache = None
        self._gate.release(len(done))
        for row in done:
            self._settle(row.generation, row.stream.finish())

    def _drop_cancelled_waiters(self) -> None:
        cancelled = [g for g in self._pending if g.cancelled]
        if cancelled:
            self._pending = [g for g in self._pending if not g.cancelled]
            self._gate.release(len(cancelled))
        for generation in cancelled + self._gate.drop_waiting(lambda g: g.cancelled):
            self._settle(generation, Finished("cancelled", generation.prompt_tokens, 0))

    def _join(self, joiners: list[Generation]) -> None:
        rows = [_Row(g, TokenStream(g, self._decode, self._eos_ids),
                     TokenChooser(self._model_defaults, g.params, g.prompt_ids), [])
                for g in joiners]
        try:
            logits, cache = RowCache.prefill(self._step, [g.prompt_ids for g in joiners],
                                             self._pad_id)
            tokens = self._choose(rows, logits)
        except Exception as error:  # only the newcomers' prefill failed; the others go on
            self._gate.release(len(rows))
            for row in rows:
                self._settle(row.generation, failure(row.generation, error))
            return
        if self._cache is None:
            self._cache = cache
        else:
            self._cache.extend(cache)
        self._rows.extend(rows)
        self._push(rows, tokens)

    def _decode_step(self) -> None:
        assert self._cache is not None
        try:
            logits = self._cache.step(self._step, [row.generated[-1] for row in self._rows])
            tokens = self._choose(self._rows, logits)
        except Exception as error:
            self._fail_all(error)
            return
        self._steps += 1
        self._row_steps += len(self._rows)
        self._largest = max(self._largest, len(self._rows))
        self._push(self._rows, tokens)

    def _choose(self, rows: list[_Row], logits: Any) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if not row.chooser.greedy:
                tokens[i] = row.chooser.choose(logits[i:i + 1], row.generated)
        return tokens

    @staticmethod
    def _push(rows: list[_Row], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens, strict=True):
            row.generated.append(token)
            row.stream.push(token)

    def _fail_all(self, error: Exception) -> None:
        rows, self._rows, self._cache = self._rows, [], None
        self._gate.release(len(rows))
        for row in rows:
            self._settle(row.generation, failure(row.generation, error))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, []
        self._gate.release(len(pending))
        for generation in pending:
            self._settle(generation, failure(generation, error))
