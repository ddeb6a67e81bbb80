"""Whether the transformers engine can batch a checkpoint's requests (continuous
batching) or must give each request its own thread and generate() call, decided from the
checkpoint's config.json and generation_config.json alone, so `modelport check` can say
it without loading the model. The engine confirms it on the loaded model
(transformers_kv.unbatchable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.config import TransformersModel

# generation_config options that change which token generate() picks and that the batched
# loop does not apply (it applies the repetition penalty and our own sampling), each with
# the value that means "off".
_OPTIONS_NOT_BATCHED: dict[str, Any] = {
    "num_beams": 1,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
}


@dataclass(frozen=True)
class BatchSupport:
    batched: bool
    reason: str  # how it batches, or why it does not; shown by `modelport check`

    def describe(self, model_name: str, parallel: int) -> str:
        if self.batched:
            return (f"model '{model_name}': transformers batches up to {parallel} requests "
                    "per forward pass (continuous batching)")
        return (f"model '{model_name}': transformers generates each request in its own "
                f"thread (not batched: {self.reason})")


BATCHED = BatchSupport(True, "continuous batching")


def batch_support(model: TransformersModel, hf_config: dict[str, Any],
                  generation_config: dict[str, Any]) -> BatchSupport:
    if model.trust_remote_code:
        return BatchSupport(False, "trust_remote_code: the checkpoint's own code may keep its "
                                   "cache in a form the batch cannot re-assemble")
    if hf_config.get("is_encoder_decoder"):
        return BatchSupport(False, "an encoder-decoder model")
    text_config = hf_config.get("text_config") or hf_config
    layer_types = set(text_config.get("layer_types") or ())
    sliding = text_config.get("sliding_window") and text_config.get("use_sliding_window") \
        is not False
    if layer_types - {"full_attention"} or (not layer_types and sliding):
        return BatchSupport(False, "sliding-window or linear attention layers")
    active = sorted(name for name, off in _OPTIONS_NOT_BATCHED.items()
                    if generation_config.get(name) not in (None, off, [], {}))
    if active:
        return BatchSupport(False, f"generation_config.json sets {', '.join(active)}")
    return BATCHED


def folder_batch_support(model: TransformersModel, folder: Path) -> BatchSupport:
    """batch_support from the checkpoint folder's JSON files (missing ones count as empty)."""
    return batch_support(model, _read_json(folder / "config.json"),
                         _read_json(folder / "generation_config.json"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
