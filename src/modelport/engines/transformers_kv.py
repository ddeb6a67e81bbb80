"""The KV cache of the requests that generate together in the transformers engine.

Rows are left-padded to one length: row r's tokens sit at the right end of the cache,
`mask` marks which cache positions are real, and `positions` holds the position id of each
row's next token (its own length, whatever the padding), as generate() does for a padded
batch. Rows join (a prefill of the newcomers, then their cache is padded to the running
one's length and concatenated) and leave (index_select) between steps, and columns that
only padding uses are cut away, so the cache is as long as its longest row.

Only full-attention DynamicCache layers can be re-assembled this way; `unbatchable`
says why a loaded model's cache is not of that kind.
"""

from __future__ import annotations

import inspect
from typing import Any

# Cache keyword of a causal LM's forward(): transformers 5 names it `cache`, earlier
# versions (and remote code written for them) `past_key_values`.
_CACHE_KEYWORDS = ("cache", "past_key_values")


def unbatchable(hf_model: Any) -> str | None:
    """Why `hf_model` cannot generate in a re-assembled batch, or None when it can."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    parameters = inspect.signature(hf_model.forward).parameters
    missing = [name for name in ("attention_mask", "position_ids") if name not in parameters]
    if not any(name in parameters for name in _CACHE_KEYWORDS):
        missing.append("cache")
    if missing:
        return f"its forward() takes no {', '.join(missing)}"
    try:
        layers = DynamicCache(config=hf_model.config).layers
    except Exception as error:  # a config transformers cannot map to cache layers
        return f"its cache layout is unknown ({type(error).__name__}: {error})"
    kinds = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if kinds:
        return f"its cache has {', '.join(kinds)} layers (sliding-window or linear attention)"
    return None


class ModelStep:
    """One forward pass of the model over the rows, returning each row's last logits."""

    def __init__(self, hf_model: Any, device: Any):
        self.model = hf_model
        self.device = device
        parameters = inspect.signature(hf_model.forward).parameters
        self._cache_keyword = next(name for name in _CACHE_KEYWORDS if name in parameters)
        # Logits of the last position only: a prefill of 16 prompts would otherwise
        # materialise (rows x tokens x vocabulary) floats.
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def __call__(self, input_ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, **{self._cache_keyword: cache}, **self._last_only)
        return output.logits[:, -1, :].float()


class RowCache:
    """The rows' cache, padding mask and next positions (see the module docstring)."""

    def __init__(self, cache: Any, mask: Any, positions: Any):
        self.cache = cache
        self.mask = mask
        self.positions = positions

    @classmethod
    def prefill(cls, step: ModelStep, prompts: list[list[int]], pad_id: int) -> tuple[Any, RowCache]:
        """Each prompt's last logits, and the new rows' cache."""
        import torch
        from transformers import DynamicCache

        width = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        input_ids, mask = input_ids.to(step.device), mask.to(step.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=step.model.config)
        logits = step(input_ids, mask, positions, cache)
        return logits, cls(cache, mask, mask.sum(-1))

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    def step(self, step: ModelStep, tokens: list[int]) -> Any:
        """Feed each row its latest token; their next logits."""
        import torch

        input_ids = torch.tensor(tokens, dtype=torch.long, device=step.device).unsqueeze(1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        logits = step(input_ids, self.mask, self.positions.unsqueeze(1), self.cache)
        self.positions = self.positions + 1
        return logits

    def extend(self, other: RowCache) -> None:
        """Append `other`'s rows after these."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width),
                                     _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)])
        self.positions = torch.cat([self.positions, other.positions])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (indices, in order), then drop the columns no row uses."""
        import torch

        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        start = int(self.mask.any(dim=0).long().argmax())
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[..., start:, :]
            layer.values = layer.values.index_select(0, index.to(layer.values.device))[
                ..., start:, :]


def _left_pad(tensor: Any, width: int) -> Any:
    """Zeros before the sequence axis (the last for a mask, the one before it for keys)."""
    import torch.nn.functional as F

    if tensor.dim() == 2:
        return F.pad(tensor, (width - tensor.shape[1], 0))
    return F.pad(tensor, (0, 0, width - tensor.shape[-2], 0))
