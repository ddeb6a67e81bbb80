"""The transformers engine's fallback for checkpoints it cannot batch (see
transformers_batch_plan): each request generates in its own thread with its own
generate() call and KV cache, `parallel` of them at once.

The threads share torch's one intra-op pool size between them: N request threads each
running a pool as large as the machine would put N times as many busy threads as CPUs
on it (16 streams on 2 cores gave 0.57x the tokens/s of one).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from modelport.engines.transformers_requests import (
    Finished,
    Generation,
    Settle,
    TokenStream,
    failure,
)
from modelport.engines.transformers_sampling import StopWhen, generate_options

if TYPE_CHECKING:
    from modelport.admission.threaded import Admission
    from modelport.engines.transformers_loading import LoadedCheckpoint


class ThreadPerRequest:
    def __init__(self, checkpoint: LoadedCheckpoint, gate: Admission, settle: Settle,
                 decode: Callable[[list[int]], str], eos_ids: frozenset[int], pad_id: int | None):
        import torch

        self._checkpoint = checkpoint
        self._gate = gate
        self._settle = settle
        self._decode = decode
        self._eos_ids = eos_ids
        self._pad_id = pad_id
        # torch's pool is sized for the process (OMP_NUM_THREADS, set by the worker from
        # the CPUs it may use); each running request takes its share.
        self._threads_each = max(1, torch.get_num_threads() // gate.limit)

    def start(self, generation: Generation) -> None:
        threading.Thread(target=self._run, args=(generation,),
                         name=f"generate-{generation.id}", daemon=True).start()

    def close(self) -> None:
        pass  # the engine cancels and waits for every generation itself

    def _run(self, generation: Generation) -> None:
        import torch

        # Sets this thread's own OpenMP team size (and the default for later threads).
        torch.set_num_threads(self._threads_each)
        if not self._gate.wait(generation, is_cancelled=lambda: generation.cancelled):
            self._settle(generation, Finished("cancelled", generation.prompt_tokens, 0))
            return
        try:
            outcome: Any = self._generate(generation)
        except Exception as error:
            outcome = failure(generation, error)
        finally:
            self._gate.release()
        self._settle(generation, outcome)

    def _generate(self, generation: Generation) -> Finished:
        import torch

        stream = TokenStream(generation, self._decode, self._eos_ids)
        prompt = torch.tensor([generation.prompt_ids], device=self._checkpoint.input_device)
        options = generate_options(self._checkpoint.model.generation_config, generation.params,
                                   len(generation.prompt_ids))
        with torch.inference_mode():
            self._checkpoint.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=generation.max_new_tokens,
                streamer=_Streamer(stream),
                stopping_criteria=[StopWhen(stream.should_stop)],
                pad_token_id=self._pad_id,
                **options,
            )
        return stream.finish()


class _Streamer:
    """generate()'s streamer: it calls put() once with the prompt, then once per new token
    (before checking the stopping criteria)."""

    def __init__(self, stream: TokenStream):
        self._stream = stream
        self._seen_prompt = False

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        for token_id in value.reshape(-1).tolist():
            self._stream.push(token_id)

    def end(self) -> None:
        pass  # finish() runs after generate() returns, so errors there reach the caller
