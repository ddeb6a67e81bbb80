"""The transformers engine: one Hugging Face checkpoint, generating for several requests.

Concurrency model: up to `parallel` requests generate at once (continuous batching, one
forward pass per step for all of them: transformers_batch), up to `max_queue` more wait in
FIFO order, and any request beyond that is refused at once with RateLimitError (429): the
engine's Admission (admission/threaded.py).
Checkpoints the batch cannot serve (transformers_batch_plan says which) fall back to one
thread and one generate() call per request (transformers_threads). Callers receive events
through a callback invoked on the engine's threads; nothing here blocks an event loop.

torch and transformers are imported lazily so the worker can set CUDA_VISIBLE_DEVICES
first, and so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from modelport.config import TransformersModel
from modelport.admission.threaded import Admission
from modelport.engines.transformers_batch import BatchCounters, BatchedDecoding
from modelport.engines.transformers_batch_plan import BatchSupport
from modelport.engines.transformers_loading import LoadedCheckpoint, load_checkpoint
from modelport.engines.transformers_requests import (  # noqa: F401  (the engine's API)
    EventSink,
    Failed,
    Finished,
    Generation,
    GenerationEvent,
    TextDelta,
)
from modelport.engines.transformers_sampling import SamplingParams  # noqa: F401
from modelport.engines.transformers_threads import ThreadPerRequest
from modelport.errors import ContextLengthError, InvalidRequestError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Completion:
    """A whole generation, for callers that do not stream."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    cancelled_total: int
    finished_total: int
    batch: BatchCounters = BatchCounters(0, 0, 0)  # all 0 when requests are not batched

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting


class TransformersEngine:
    """Generates for one loaded checkpoint; see the module docstring for concurrency."""

    def __init__(self, checkpoint: LoadedCheckpoint, *, name: str, parallel: int, max_queue: int):
        self.name = name
        self.checkpoint = checkpoint
        self.context_length = checkpoint.context_length
        self._tokenizer = checkpoint.tokenizer
        batched = checkpoint.batch.batched
        # One thread runs every forward pass of a batch, so only threads need serializing.
        self._gate = Admission(
            name, 1 if checkpoint.serialize_forward and not batched else parallel, max_queue)
        # Fast tokenizers raise "Already borrowed" when two threads encode at once.
        self._tokenizer_lock = threading.Lock()
        self._eos_ids = _eos_token_ids(checkpoint)
        self._live: set[Generation] = set()
        self._live_lock = threading.Lock()
        self._cancelled_total = 0
        self._finished_total = 0
        runner = BatchedDecoding if batched else ThreadPerRequest
        self._runner: BatchedDecoding | ThreadPerRequest = runner(
            checkpoint, self._gate, self._settle, self.decode, self._eos_ids,
            self._pad_token_id())
        log.info("model '%s': %s", name, checkpoint.batch.describe(name, self._gate.limit))

    @classmethod
    def load(cls, model: TransformersModel, path: Path) -> TransformersEngine:
        checkpoint = load_checkpoint(model, path)
        return cls(checkpoint, name=model.name, parallel=model.parallel, max_queue=model.max_queue)

    # -- prompts ---------------------------------------------------------------

    def chat_prompt(self, messages: Sequence[dict[str, Any]],
                    tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the conversation (and the tools it may call) rendered by the model's
        chat template."""
        try:
            with self._tokenizer_lock:
                text = self._tokenizer.apply_chat_template(
                    list(messages),
                    tools=list(tools) if tools else None,
                    chat_template=self.checkpoint.chat_template,
                    tokenize=False,
                    add_generation_prompt=True,
                )
        except Exception as error:  # the template's own raise_exception, or a Jinja error
            raise InvalidRequestError(
                f"the model's chat template rejected these messages: {error}", param="messages"
            ) from None
        # The template already wrote any BOS token; adding it again would double it.
        return self._encode(text, add_special_tokens=False)

    def text_prompt(self, text: str) -> list[int]:
        return self._encode(text, add_special_tokens=True)

    def continuation_ids(self, text: str, continuations: Sequence[str]) -> tuple[
            list[int], tuple[tuple[int, ...], ...]]:
        """Token ids of `text`, and of each continuation as it follows `text` (encoded
        together where the tokenizer keeps `text`'s tokens as they are)."""
        base = self._encode(text, add_special_tokens=False)
        sequences = []
        for continuation in continuations:
            whole = self._encode(text + continuation, add_special_tokens=False)
            if whole[:len(base)] == base:
                sequences.append(tuple(whole[len(base):]))
            else:
                sequences.append(tuple(self._encode(continuation, add_special_tokens=False)))
        return base, tuple(sequences)

    @property
    def template(self) -> str | None:
        """The chat template in use: the configured one, else the tokenizer's own."""
        own = getattr(self._tokenizer, "chat_template", None)
        return self.checkpoint.chat_template or (own if isinstance(own, str) else None)

    def _encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        with self._tokenizer_lock:
            return list(self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)

    # -- generation ------------------------------------------------------------

    @property
    def batch(self) -> BatchSupport:
        """Whether requests are batched, or why each has its own thread."""
        return self.checkpoint.batch

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, on_event: EventSink
    ) -> Generation:
        """Queue a generation; raises ContextLengthError or RateLimitError now."""
        max_new_tokens = self._max_new_tokens(len(prompt_ids), params.max_tokens)
        generation = Generation(list(prompt_ids), max_new_tokens, params, on_event)
        self._gate.join(generation)
        with self._live_lock:
            self._live.add(generation)
        self._runner.start(generation)
        return generation

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Completion:
        """Blocking convenience for scripts and tests: the whole completion at once."""
        pieces: list[str] = []
        outcome: list[Finished | Failed] = []

        def collect(event: GenerationEvent) -> None:
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            else:
                outcome.append(event)

        self.submit(prompt_ids, params, collect).wait()
        if isinstance(outcome[0], Failed):
            raise outcome[0].error
        finished = outcome[0]
        return Completion(
            "".join(pieces),
            finished.finish_reason,
            finished.prompt_tokens,
            finished.completion_tokens,
        )

    def stats(self) -> EngineStats:
        running, waiting = self._gate.counts()
        counters = self._runner.counters() if isinstance(self._runner, BatchedDecoding) \
            else BatchCounters(0, 0, 0)
        return EngineStats(running, waiting, self._cancelled_total, self._finished_total,
                           counters)

    def close(self) -> None:
        """Cancel everything still queued or generating (worker shutdown)."""
        with self._live_lock:
            live = list(self._live)
        for generation in live:
            generation.cancel()
        for generation in live:
            generation.wait(timeout=10)
        self._runner.close()

    def _max_new_tokens(self, prompt_tokens: int, requested: int | None) -> int:
        room = self.context_length - prompt_tokens
        if room < 1:
            raise ContextLengthError(
                f"This model's maximum context length is {self.context_length} tokens, but "
                f"the prompt has {prompt_tokens} tokens, leaving no room for an answer. "
                "Shorten the messages or prompt.",
                param="messages",
            )
        if requested is not None and requested > room:
            raise ContextLengthError(
                f"This model's maximum context length is {self.context_length} tokens. "
                f"However, you requested {prompt_tokens + requested} tokens "
                f"({prompt_tokens} in the prompt, {requested} for the completion). "
                "Reduce the length of the prompt or max_tokens.",
                param="max_tokens",
            )
        return requested if requested is not None else room

    def _settle(self, generation: Generation, outcome: Finished | Failed) -> None:
        """A generation's last event, on the engine's thread that ran it."""
        try:
            if isinstance(outcome, Finished):
                with self._live_lock:
                    if outcome.finish_reason == "cancelled":
                        self._cancelled_total += 1
                    else:
                        self._finished_total += 1
            generation.deliver(outcome)
        finally:
            with self._live_lock:
                self._live.discard(generation)
            generation.mark_done()

    def _pad_token_id(self) -> int | None:
        pad = self._tokenizer.pad_token_id
        return pad if pad is not None else next(iter(self._eos_ids), None)


def _eos_token_ids(checkpoint: LoadedCheckpoint) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(checkpoint.model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if isinstance(value, int):
            ids.add(value)
    if isinstance(checkpoint.tokenizer.eos_token_id, int):
        ids.add(checkpoint.tokenizer.eos_token_id)
    return frozenset(ids)
