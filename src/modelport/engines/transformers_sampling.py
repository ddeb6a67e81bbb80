"""What the transformers engine hands to generate(): greedy decoding with sampling done by
our own seeded logits processor (so a request's `seed` reproduces its answer even while
other requests generate), a forced opening for tool calls, and a stop predicate.

torch is imported inside the calls, as in the engine, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from modelport.engines.transformers_engine import SamplingParams


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

        if self._generator is None:
            self._generator = torch.Generator(device=scores.device)
            if self._seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self._seed)
        probabilities = torch.softmax(scores.float() / self._temperature, dim=-1)
        if self._top_p < 1.0:
            probabilities = _top_p_filter(probabilities, self._top_p)
        choice = torch.multinomial(probabilities, 1, generator=self._generator)
        only_choice = torch.full_like(scores, float("-inf"))
        return only_choice.scatter_(1, choice, 0.0)


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
        generated = tuple(input_ids[0, self._prompt_tokens:].tolist())
        step = len(generated)
        allowed = {seq[step] for seq in self._openings
                   if len(seq) > step and seq[:step] == generated}
        if not allowed:
            return scores  # an opening is complete: the rest is the model's own
        masked = scores.new_full(scores.shape, float("-inf"))
        index = list(allowed)
        masked[:, index] = scores[:, index]
        return masked


def generate_options(model_defaults: Any, params: SamplingParams,
                      prompt_tokens: int = 0) -> dict[str, Any]:
    """generate() keyword arguments: always greedy, with sampling done by SeededSampler.

    A request's unset temperature/top_p falls back to the model's generation_config
    when that config samples, else to OpenAI's defaults (1.0, 1.0).
    """
    samples_by_default = bool(getattr(model_defaults, "do_sample", False))
    default_temperature = (
        getattr(model_defaults, "temperature", None) if samples_by_default else None
    ) or 1.0
    default_top_p = (getattr(model_defaults, "top_p", None) if samples_by_default else None) or 1.0
    temperature = params.temperature if params.temperature is not None else default_temperature
    top_p = params.top_p if params.top_p is not None else default_top_p
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
        processors.append(SeededSampler(temperature, max(top_p, 1e-6), params.seed))
    if processors:
        options["logits_processor"] = processors
    return options
