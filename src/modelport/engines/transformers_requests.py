"""One request to the transformers engine, whichever way it is generated: its events, its
handle (`Generation`: cancel, end, wait) and `TokenStream`, which turns the tokens chosen
for it into text events (incremental decoding, stop sequences, end of sequence) and into
its finish reason. No torch here.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable, Union

from modelport.engines.protocol import (  # noqa: F401  (the events of a generation)
    Failed,
    Finished,
    GenerationEvent,
    TextDelta,
)
from modelport.engines.text_streaming import IncrementalDecoder, StopSequenceFilter
from modelport.engines.transformers_sampling import SamplingParams
from modelport.errors import ModelportError

log = logging.getLogger(__name__)


EventSink = Callable[[GenerationEvent], None]

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
        """Wait until the generation has finished; False on timeout."""
        return self._done.wait(timeout)

    def deliver(self, event: GenerationEvent) -> None:
        try:
            self.on_event(event)
        except Exception:  # a consumer that went away must not stop the engine
            log.debug("event sink of generation %s failed", self.id, exc_info=True)
            self.cancel()


class TokenStream:
    """The tokens chosen for one generation, as text events and a finish reason."""

    def __init__(self, generation: Generation, decode: Callable[[list[int]], str],
                 eos_ids: frozenset[int]):
        self._generation = generation
        self._eos_ids = eos_ids
        self._decoder = IncrementalDecoder(decode, generation.prompt_ids)
        self._stops = StopSequenceFilter(generation.params.stop)
        self._hit_eos = False
        self.completion_tokens = 0

    def push(self, token_id: int) -> None:
        self.completion_tokens += 1
        if token_id in self._eos_ids:
            self._hit_eos = True
            return
        self._emit(self._stops.push(self._decoder.push(token_id)))

    def should_stop(self) -> bool:
        return (self._generation.cancelled or self._generation.ended or self._stops.stopped
                or self._hit_eos)

    @property
    def done(self) -> bool:
        """Nothing more to generate: stopped, or max_new_tokens reached."""
        return self.should_stop() or self.completion_tokens >= self._generation.max_new_tokens

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
            self._generation.deliver(TextDelta(text))


Settle = Callable[[Generation, Union[Finished, Failed]], None]


def failure(generation: Generation, error: Exception) -> Failed:
    """The Failed event for an exception raised while generating (a torch or CUDA fault
    included: it must still end the request)."""
    if isinstance(error, ModelportError):
        return Failed(error)
    log.error("generation %s failed", generation.id, exc_info=error)
    return Failed(ModelportError(f"generation failed: {type(error).__name__}: {error}"))
