"""A BERT sentence encoder in plain torch, with the `tokenizers` package for its tokenizer:
what sentence-transformers computes for a Transformer + Pooling (+ Normalize) folder, at
the cost of importing torch alone (engines/embedding_plan.py says when it applies and why).

The forward pass is BERT's own (post-norm layers, exact GELU, absolute positions, one
token type); attention is torch's scaled_dot_product_attention, the kernel transformers
uses for BERT on torch 2, so the vectors match sentence-transformers' to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelport.engines.embedding_plan import EncoderPlan


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key and value in one matmul
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, intermediate)
        self.down = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, hidden // self.heads) \
            .permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        x = self.attention_norm(x + self.attention_out(
            context.transpose(1, 2).reshape(batch, length, hidden)))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    """Token ids and attention mask in, one pooled (and normalized) vector per row out."""

    def __init__(self, config: dict[str, Any], pooling: str, normalize: bool) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        # Every input is one segment: token type 0, as sentence-transformers passes it.
        self.token_type = nn.Parameter(torch.zeros(hidden))
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"]))
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embedding_norm(self.word(input_ids) + self.position(positions) + self.token_type)
        attend = mask.bool()[:, None, None, :]  # keys to attend to; padding is not one
        for layer in self.layers:
            x = layer(x, attend)
        vectors = self._pool(x, mask)
        return F.normalize(vectors, p=2, dim=1) if self.normalize else vectors

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return x[:, 0]  # rows are padded on the right: the first token is [CLS]
        weights = mask.unsqueeze(-1).to(x.dtype)
        if self.pooling == "max":
            return x.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _bert_weights(tensors: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The checkpoint's BertModel names (with or without a `bert.` prefix) as BertEncoder's."""
    prefix = next((name[:-len("embeddings.word_embeddings.weight")] for name in tensors
                   if name.endswith("embeddings.word_embeddings.weight")), "")

    def get(name: str) -> torch.Tensor:
        return tensors[prefix + name]

    weights = {
        "word.weight": get("embeddings.word_embeddings.weight"),
        "position.weight": get("embeddings.position_embeddings.weight"),
        "token_type": get("embeddings.token_type_embeddings.weight")[0],
        "embedding_norm.weight": get("embeddings.LayerNorm.weight"),
        "embedding_norm.bias": get("embeddings.LayerNorm.bias"),
    }
    renamed = {"attention_out": "attention.output.dense", "attention_norm":
               "attention.output.LayerNorm", "up": "intermediate.dense", "down": "output.dense",
               "out_norm": "output.LayerNorm"}
    for index in range(layers):
        source = f"encoder.layer.{index}."
        for part in ("weight", "bias"):
            weights[f"layers.{index}.qkv.{part}"] = torch.cat([
                get(f"{source}attention.self.{name}.{part}") for name in ("query", "key", "value")])
            for ours, theirs in renamed.items():
                weights[f"layers.{index}.{ours}.{part}"] = get(f"{source}{theirs}.{part}")
    return weights


class NativeTextEncoder:
    """The own encoder behind the embedding engine's encoder interface (see
    engines/text_encoders.py): tokenizer, limits and the forward pass."""

    kind = "modelport's BERT encoder"

    def __init__(self, plan: EncoderPlan, device: str) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((plan.folder / "config.json").read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(plan.folder / "tokenizer.json"))
        # The engine rejects over-long inputs itself and pads its own batches.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.device = torch.device(device)
        model = BertEncoder(config, plan.pooling, plan.normalize)
        model.load_state_dict(_bert_weights(load_file(str(plan.folder / "model.safetensors")),
                                            config["num_hidden_layers"]))
        self.model = model.to(self.device).eval()
        self.dimensions = config["hidden_size"]
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=False)
        self.pad_id = _pad_id(plan.folder, self.tokenizer, config)
        self.max_seq_length = min(plan.max_seq_length or _tokenizer_limit(plan.folder),
                                  config["max_position_embeddings"])
        self.prompt = plan.prompt

    def token_ids(self, texts: list[str], special_tokens: bool = True) -> list[list[int]]:
        return [encoding.ids for encoding in
                self.tokenizer.encode_batch(texts, add_special_tokens=special_tokens)]

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids.to(self.device), mask.to(self.device))


def _tokenizer_settings(folder: Path) -> dict[str, Any]:
    try:
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _tokenizer_limit(folder: Path) -> int:
    """tokenizer_config.json's model_max_length (transformers writes ~1e30 for "none")."""
    limit = _tokenizer_settings(folder).get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 1_000_000


def _pad_id(folder: Path, tokenizer: Any, config: dict[str, Any]) -> int:
    pad = _tokenizer_settings(folder).get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    token_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    return token_id if token_id is not None else config.get("pad_token_id") or 0
