"""The transformers engine: one Hugging Face checkpoint, generating for several requests.

Concurrency model: each request generates in its own thread with its own KV cache;
`parallel` of them run at once (one at a time when accelerate offloading makes
concurrent forward passes unsafe), up to `max_queue` more wait in FIFO order, and any
request beyond that is refused at once with RateLimitError (429). Requests are not
batched together: transformers' generate() takes one set of sampling options per call
and its continuous-batching API is experimental, so per-request threads are the
reliable choice. Callers receive events through a callback invoked on the generation
thread; nothing here blocks an event loop.

torch and transformers are imported lazily so the worker can set CUDA_VISIBLE_DEVICES
first, and so importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from modelport.config import TransformersModel
from modelport.engines.text_streaming import IncrementalDecoder, StopSequenceFilter
from modelport.engines.transformers_loading import LoadedCheckpoint, load_checkpoint
from modelport.engines.transformers_sampling import StopWhen, generate_options
from modelport.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelportError,
    RateLimitError,
)

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
# How often a queued request re-checks whether its client has gone away.
_QUEUE_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class SamplingParams:
    """What a request may choose; None means the model's default (OpenAI semantics)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Token sequences one of which the answer must begin with (a forced tool call's name).
    openings: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop", "length", or "cancelled" (the client is gone)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ModelportError


GenerationEvent = Union[TextDelta, Finished, Failed]
EventSink = Callable[[GenerationEvent], None]


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

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting


class AdmissionGate:
    """`parallel` slots plus a FIFO queue of `max_queue`; beyond that, refuse at once."""

    def __init__(self, parallel: int, max_queue: int):
        self.parallel = parallel
        self.max_queue = max_queue
        self._condition = threading.Condition()
        self._running = 0
        self._queue: deque[object] = deque()

    def enter(self, ticket: object) -> None:
        with self._condition:
            if self._running + len(self._queue) >= self.parallel + self.max_queue:
                raise RateLimitError(
                    f"the model is busy: {self._running} request(s) generating and "
                    f"{len(self._queue)} waiting (parallel {self.parallel}, max_queue "
                    f"{self.max_queue}); retry in {RETRY_AFTER_SECONDS}s",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._queue.append(ticket)

    def wait_for_slot(self, ticket: object, is_cancelled: Callable[[], bool]) -> bool:
        """Block until `ticket` may run (True) or was cancelled while queued (False)."""
        with self._condition:
            while not (self._queue[0] is ticket and self._running < self.parallel):
                if is_cancelled():
                    self._queue.remove(ticket)
                    self._condition.notify_all()
                    return False
                self._condition.wait(_QUEUE_POLL_SECONDS)
            self._queue.popleft()
            self._running += 1
            self._condition.notify_all()
            return True

    def release(self) -> None:
        with self._condition:
            self._running -= 1
            self._condition.notify_all()

    def counts(self) -> tuple[int, int]:
        with self._condition:
            return self._running, len(self._queue)


_ids = itertools.count(1)


class Generation:
    """One request's generation; `cancel()` stops it at the next token (or dequeues it)."""

    def __init__(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        params: SamplingParams,
        on_event: EventSink,
    ):
        self.id = next(_ids)
        self.prompt_ids = prompt_ids
        self.max_new_tokens = max_new_tokens
        self.params = params
        self.on_event = on_event
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self._done = threading.Event()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def end(self) -> None:
        """Stop at the next token with finish_reason "stop": the caller has what it needs
        (a forced tool call is complete)."""
        self._ended.set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def mark_done(self) -> None:
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the generation thread has finished; False on timeout."""
        return self._done.wait(timeout)


class TransformersEngine:
    """Generates for one loaded checkpoint; see the module docstring for concurrency."""

    def __init__(self, checkpoint: LoadedCheckpoint, *, name: str, parallel: int, max_queue: int):
        self.name = name
        self.checkpoint = checkpoint
        self.context_length = checkpoint.context_length
        self._tokenizer = checkpoint.tokenizer
        self._gate = AdmissionGate(1 if checkpoint.serialize_forward else parallel, max_queue)
        # Fast tokenizers raise "Already borrowed" when two threads encode at once.
        self._tokenizer_lock = threading.Lock()
        self._eos_ids = _eos_token_ids(checkpoint)
        self._live: set[Generation] = set()
        self._live_lock = threading.Lock()
        self._cancelled_total = 0
        self._finished_total = 0

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

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, on_event: EventSink
    ) -> Generation:
        """Start generating in a new thread; raises ContextLengthError or RateLimitError now."""
        max_new_tokens = self._max_new_tokens(len(prompt_ids), params.max_tokens)
        generation = Generation(list(prompt_ids), max_new_tokens, params, on_event)
        self._gate.enter(generation)
        with self._live_lock:
            self._live.add(generation)
        thread = threading.Thread(
            target=self._run, args=(generation,), name=f"generate-{generation.id}", daemon=True
        )
        thread.start()
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
        return EngineStats(running, waiting, self._cancelled_total, self._finished_total)

    def close(self) -> None:
        """Cancel everything still queued or generating (worker shutdown)."""
        with self._live_lock:
            live = list(self._live)
        for generation in live:
            generation.cancel()
        for generation in live:
            generation.wait(timeout=10)

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

    def _run(self, generation: Generation) -> None:
        try:
            if not self._gate.wait_for_slot(generation, lambda: generation.cancelled):
                self._report_finished(
                    generation, Finished("cancelled", generation.prompt_tokens, 0)
                )
                return
            try:
                finished = self._generate(generation)
            finally:
                self._gate.release()
            self._report_finished(generation, finished)
        except ModelportError as error:
            self._deliver(generation, Failed(error))
        except Exception as error:  # a torch/CUDA failure must still end the request
            log.exception("generation %s failed", generation.id)
            self._deliver(
                generation,
                Failed(ModelportError(f"generation failed: {type(error).__name__}: {error}")),
            )
        finally:
            with self._live_lock:
                self._live.discard(generation)
            generation.mark_done()

    def _report_finished(self, generation: Generation, finished: Finished) -> None:
        with self._live_lock:
            if finished.finish_reason == "cancelled":
                self._cancelled_total += 1
            else:
                self._finished_total += 1
        self._deliver(generation, finished)

    @staticmethod
    def _deliver(generation: Generation, event: GenerationEvent) -> None:
        try:
            generation.on_event(event)
        except Exception:  # a consumer that went away must not kill the thread
            log.debug("event sink of generation %s failed", generation.id, exc_info=True)
            generation.cancel()

    def _generate(self, generation: Generation) -> Finished:
        import torch

        progress = _StreamProgress(generation, self.decode, self._eos_ids, self._deliver)
        prompt = torch.tensor([generation.prompt_ids], device=self.checkpoint.input_device)
        options = generate_options(self.checkpoint.model.generation_config, generation.params,
                                    len(generation.prompt_ids))
        with torch.inference_mode():
            self.checkpoint.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=generation.max_new_tokens,
                streamer=progress,
                stopping_criteria=[StopWhen(progress.should_stop)],
                pad_token_id=self._pad_token_id(),
                **options,
            )
        return progress.finish()

    def _pad_token_id(self) -> int | None:
        pad = self._tokenizer.pad_token_id
        return pad if pad is not None else next(iter(self._eos_ids), None)


class _StreamProgress:
    """generate()'s streamer: decodes each token, applies stop sequences, emits events.

    It runs on the generation thread inside generate(), which calls put() once with
    the prompt and then once per new token, before checking the stopping criteria.
    """

    def __init__(
        self,
        generation: Generation,
        decode: Callable[[list[int]], str],
        eos_ids: frozenset[int],
        deliver: Callable[[Generation, GenerationEvent], None],
    ):
        self._generation = generation
        self._eos_ids = eos_ids
        self._deliver = deliver
        self._decoder = IncrementalDecoder(decode, generation.prompt_ids)
        self._stops = StopSequenceFilter(generation.params.stop)
        self._seen_prompt = False
        self._hit_eos = False
        self.completion_tokens = 0

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        for token_id in value.reshape(-1).tolist():
            self.completion_tokens += 1
            if token_id in self._eos_ids:
                self._hit_eos = True
                return
            self._emit(self._stops.push(self._decoder.push(token_id)))

    def end(self) -> None:
        pass  # finish() runs after generate() returns, so errors there reach the caller

    def should_stop(self) -> bool:
        return (self._generation.cancelled or self._generation.ended or self._stops.stopped
                or self._hit_eos)

    def finish(self) -> Finished:
        if self._generation.cancelled:
            reason = "cancelled"
        else:
            if not self._stops.stopped:
                self._emit(self._stops.push(self._decoder.flush()) + self._stops.flush())
            stopped = self._stops.stopped or self._hit_eos or self._generation.ended
            hit_limit = self.completion_tokens >= self._generation.max_new_tokens
            reason = "length" if hit_limit and not stopped else "stop"
        return Finished(reason, self._generation.prompt_tokens, self.completion_tokens)

    def _emit(self, text: str) -> None:
        if text and not self._generation.cancelled:
            self._deliver(self._generation, TextDelta(text))


def _eos_token_ids(checkpoint: LoadedCheckpoint) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(checkpoint.model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if isinstance(value, int):
            ids.add(value)
    if isinstance(checkpoint.tokenizer.eos_token_id, int):
        ids.add(checkpoint.tokenizer.eos_token_id)
    return frozenset(ids)
