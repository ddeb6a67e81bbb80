"""The embedding engine's encoder: modelport's own BERT encoder where the folder allows it
(engines/embedding_plan.py), else sentence-transformers. Both offer the same interface:
`token_ids(texts, special_tokens)`, `forward(input_ids, mask)` -> one vector per row,
and `dimensions`, `vocab_size`, `pad_id`, `max_seq_length`, `prompt`, `kind`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelport.config import SentenceTransformersModel
from modelport.engines.batching import load_offline
from modelport.engines.embedding_plan import encoder_choice

logger = logging.getLogger("modelport.engines")


class SentenceTransformersEncoder:
    """A SentenceTransformer with the tokenizer it was saved with."""

    kind = "sentence-transformers"

    def __init__(self, model: SentenceTransformersModel, path: Path) -> None:
        self.model = load_offline("SentenceTransformer", model, path)
        self.tokenizer = self.model.tokenizer
        self.dimensions = self.model.get_embedding_dimension() if hasattr(
            self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension()
        self.vocab_size = self.tokenizer.vocab_size
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.max_seq_length = self.model.max_seq_length or 512
        self._type_ids = "token_type_ids" in self.tokenizer.model_input_names
        # encode() prepends the model's default prompt, if it names one; so does the engine.
        default_prompt = getattr(self.model, "default_prompt_name", None)
        self.prompt = (self.model.prompts or {}).get(default_prompt, "") if default_prompt else ""

    def token_ids(self, texts: list[str], special_tokens: bool = True) -> list[list[int]]:
        return self.tokenizer(
            texts, add_special_tokens=special_tokens, truncation=False, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"]

    def forward(self, input_ids: Any, mask: Any) -> Any:
        import torch

        features = {"input_ids": input_ids, "attention_mask": mask}
        if self._type_ids:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        features = {k: v.to(self.model.device) for k, v in features.items()}
        return self.model(features)["sentence_embedding"]


def _device(configured: str) -> str:
    """The configured device; for `auto`, CUDA when torch sees a GPU (as sentence-transformers
    chooses), else the CPU."""
    if configured != "auto":
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_encoder(model: SentenceTransformersModel, path: Path) -> Any:
    """The encoder that serves the folder `path`, loaded and ready."""
    choice = encoder_choice(path)
    logger.info("%s", choice.describe(model.name))
    if choice.plan is not None:
        from modelport.engines.bert_encoder import NativeTextEncoder

        try:
            return NativeTextEncoder(choice.plan, _device(model.device))
        # The JSON files promised a BERT; weights under other names or a tokenizer file
        # of another format are for sentence-transformers (and transformers) to read.
        except Exception as error:  # noqa: BLE001
            logger.warning("model '%s': the own BERT encoder cannot load %s (%r); loading "
                           "sentence-transformers instead", model.name, path, error)
    return SentenceTransformersEncoder(model, path)
