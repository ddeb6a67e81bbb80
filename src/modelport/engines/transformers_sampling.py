"""What a request may choose (SamplingParams) and how its next token is chosen: sampling by
our own seeded sampler (so a request's `seed` reproduces its answer even while other
requests generate), a forced opening for tool calls, and a stop predicate.

Both ways of generating use it: `generate_options` gives generate() its keyword arguments
(one request per call), `TokenChooser` picks one row's token in the batched decode loop.
torch is imported inside the calls, as in the engine, so importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


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


class StopWhen:
    """A transformers stopping criterion (duck-typed) backed by a plain predicate."""

    def __init__(self, predicate: Callable[[], bool]):
        self._predicate = predicate

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self._predicate(), dtype=torch.bool, device=input_ids.device
        )


class SeededSampler:
    """Temperature + top-p sampling with a per-request torch.Generator.

    generate() samples from torch's global RNG, which concurrent requests would share,
    so a `seed` would not reproduce anything. This logits processor samples itself and
    leaves only the chosen token finite; generate() then runs greedy and picks it.
    """

    def __init__(self, temperature: float, top_p: float, seed: int | None):
        self._temperature = temperature
        self._top_p = top_p
        self._seed = seed
        self._generator: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        only_choice = torch.full_like(scores, float("-inf"))
        return only_choice.scatter_(1, self.sample(scores), 0.0)

    def sample(self, scores: Any) -> Any:
        """The chosen token id of each row of `scores`, shape (rows, 1)."""
        import torch

        if self._generator is None:
            self._generator = torch.Generator(device=scores.device)
            if self._seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self._seed)
        probabilities = torch.softmax(scores.float() / self._temperature, dim=-1)
        if self._top_p < 1.0:
            probabilities = _top_p_filter(probabilities, self._top_p)
        return torch.multinomial(probabilities, 1, generator=self._generator)


def _top_p_filter(probabilities: Any, top_p: float) -> Any:
    import torch

    sorted_probs, order = torch.sort(probabilities, descending=True, dim=-1)
    # Keep the smallest set of tokens whose mass reaches top_p (always at least one).
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return torch.zeros_like(probabilities).scatter_(1, order, sorted_probs)


class ForcedOpening:
    """A logits processor that lets the answer begin only with one of the given token
    sequences (then leaves it free): constrained decoding of a forced tool call's name."""

    def __init__(self, prompt_tokens: int, openings: tuple[tuple[int, ...], ...]):
        self._prompt_tokens = prompt_tokens
        self._openings = openings

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.restrict(scores, tuple(input_ids[0, self._prompt_tokens:].tolist()))

    def restrict(self, scores: Any, generated: tuple[int, ...]) -> Any:
        """`scores` with every token that no opening allows after `generated` masked out."""
        step = len(generated)
        allowed = {seq[step] for seq in self._openings
                   if len(seq) > step and seq[:step] == generated}
        if not allowed:
            return scores  # an opening is complete: the rest is the model's own
        masked = scores.new_full(scores.shape, float("-inf"))
        index = list(allowed)
        masked[:, index] = scores[:, index]
        return masked


def _temperature_and_top_p(model_defaults: Any, params: SamplingParams) -> tuple[float, float]:
    """A request's unset temperature/top_p fall back to the model's generation_config when
    that config samples, else to OpenAI's defaults (1.0, 1.0)."""
    samples_by_default = bool(getattr(model_defaults, "do_sample", False))
    default_temperature = (
        getattr(model_defaults, "temperature", None) if samples_by_default else None
    ) or 1.0
    default_top_p = (getattr(model_defaults, "top_p", None) if samples_by_default else None) or 1.0
    temperature = params.temperature if params.temperature is not None else default_temperature
    top_p = params.top_p if params.top_p is not None else default_top_p
    return temperature, max(top_p, 1e-6)


def generate_options(model_defaults: Any, params: SamplingParams,
                      prompt_tokens: int = 0) -> dict[str, Any]:
    """generate() keyword arguments: always greedy, with sampling done by SeededSampler."""
    temperature, top_p = _temperature_and_top_p(model_defaults, params)
    # The model's own warpers (top_k, temperature) are switched off with do_sample=False;
    # unset ones are cleared so transformers does not warn that they are ignored.
    options: dict[str, Any] = {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    processors: list[Any] = []
    if params.openings:
        processors.append(ForcedOpening(prompt_tokens, params.openings))
    if temperature > 0:
        processors.append(SeededSampler(temperature, top_p, params.seed))
    if processors:
        options["logits_processor"] = processors
    return options


class TokenChooser:
    """One request's next token in the batched loop, as generate_options would have
    generate() choose it: forced opening, the model's repetition penalty, then greedy or
    seeded sampling."""

    def __init__(self, model_defaults: Any, params: SamplingParams, prompt_ids: list[int]):
        temperature, top_p = _temperature_and_top_p(model_defaults, params)
        self._sampler = SeededSampler(temperature, top_p, params.seed) if temperature > 0 \
            else None
        self._opening = ForcedOpening(0, params.openings) if params.openings else None
        penalty = getattr(model_defaults, "repetition_penalty", None)
        self._penalty = penalty if penalty not in (None, 1.0) else None
        self._prompt_ids = prompt_ids

    @property
    def greedy(self) -> bool:
        """True when the row's plain argmax is its choice (the batch takes it in one op)."""
        return self._sampler is None and self._opening is None and self._penalty is None

    def choose(self, scores: Any, generated: list[int]) -> int:
        """The next token for a row whose logits are `scores` (shape (1, vocab))."""
        if self._opening is not None:
            scores = self._opening.restrict(scores, tuple(generated))
        if self._penalty is not None:
            scores = _repetition_penalty(scores, self._prompt_ids + generated, self._penalty)
        if self._sampler is None:
            return int(scores.argmax(dim=-1)[0])
        return int(self._sampler.sample(scores)[0, 0])


def _repetition_penalty(scores: Any, seen: list[int], penalty: float) -> Any:
    # As transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits are divided
    # by the penalty when positive and multiplied when negative.
    import torch

    index = torch.tensor([sorted(set(seen))], device=scores.device)
    picked = scores.gather(1, index)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, index, picked)
