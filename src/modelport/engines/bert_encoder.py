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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from modelport.engines.embedding_plan import EncoderPlan

# The one tensor every BertModel checkpoint has; what precedes it is the checkpoint's prefix
# (`bert.` when saved from a model with a head).
_WORD = "embeddings.word_embeddings.weight"

Linear = tuple[torch.Tensor, torch.Tensor]  # (weight, bias); a LayerNorm's too


@dataclass(frozen=True)
class _Layer:
    qkv: Linear  # query, key and value in one matmul
    attention_out: Linear
    attention_norm: Linear
    up: Linear
    down: Linear
    out_norm: Linear


class BertEncoder:
    """Token ids and attention mask in, one pooled (and normalized) vector per row out.

    Plain tensors and torch.nn.functional rather than nn.Module layers: building modules
    initialises every weight at random before the checkpoint's replace them, which took
    longer than reading the checkpoint."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                 pooling: str, normalize: bool) -> None:
        prefix = next((name[:-len(_WORD)] for name in tensors if name.endswith(_WORD)), "")

        def get(name: str) -> torch.Tensor:
            return tensors[prefix + name].float()

        def pair(name: str) -> Linear:
            return get(f"{name}.weight"), get(f"{name}.bias")

        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.word = get(_WORD)
        self.position = get("embeddings.position_embeddings.weight")
        # Every input is one segment: token type 0, as sentence-transformers passes it.
        self.token_type = get("embeddings.token_type_embeddings.weight")[0]
        self.embedding_norm = pair("embeddings.LayerNorm")
        self.layers = []
        for index in range(config["num_hidden_layers"]):
            layer = f"encoder.layer.{index}."
            qkv = [pair(f"{layer}attention.self.{name}") for name in ("query", "key", "value")]
            self.layers.append(_Layer(
                (torch.cat([w for w, _ in qkv]), torch.cat([b for _, b in qkv])),
                pair(f"{layer}attention.output.dense"), pair(f"{layer}attention.output.LayerNorm"),
                pair(f"{layer}intermediate.dense"), pair(f"{layer}output.dense"),
                pair(f"{layer}output.LayerNorm")))
        self.pooling = pooling
        self.normalize = normalize

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self._norm(F.embedding(input_ids, self.word) + self.position[positions]
                       + self.token_type, self.embedding_norm)
        attend = mask.bool()[:, None, None, :]  # keys to attend to; padding is not one
        for layer in self.layers:
            x = self._layer(x, attend, layer)
        vectors = self._pool(x, mask)
        return F.normalize(vectors, p=2, dim=1) if self.normalize else vectors

    def _norm(self, x: torch.Tensor, weights: Linear) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden,), weights[0], weights[1], self.eps)

    def _layer(self, x: torch.Tensor, attend: torch.Tensor, layer: _Layer) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = F.linear(x, *layer.qkv).view(batch, length, 3, self.heads, hidden // self.heads) \
            .permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        x = self._norm(x + F.linear(context.transpose(1, 2).reshape(batch, length, hidden),
                                    *layer.attention_out), layer.attention_norm)
        return self._norm(x + F.linear(F.gelu(F.linear(x, *layer.up)), *layer.down),
                          layer.out_norm)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return x[:, 0]  # rows are padded on the right: the first token is [CLS]
        weights = mask.unsqueeze(-1).to(x.dtype)
        if self.pooling == "max":
            return x.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


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
        self.model = BertEncoder(load_file(str(plan.folder / "model.safetensors"),
                                           device=str(self.device)),
                                 config, plan.pooling, plan.normalize)
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
