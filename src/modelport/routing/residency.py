"""What a local model holds in memory once loaded, estimated before loading it, so that
`server.memory_budget` counts memory rather than files.

A GGUF model on llama.cpp holds its weights (the file, mapped) and a KV cache of
`context_length x parallel` tokens (llama.cpp's n_ctx): 2 (keys and values) x layers x
tokens x KV heads x head size x 2 bytes (f16). Other checkpoints are counted by their
files. Once a worker runs, what it really holds (its resident memory) is used when larger.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from modelport.engines.gguf_metadata import read_numbers, read_string

_F16_BYTES = 2


def gguf_kv_cache_bytes(path: Path, tokens: int) -> int:
    """Bytes of the f16 KV cache for `tokens` tokens of the GGUF model at `path` (0 when
    its metadata does not say enough)."""
    architecture = read_string(path, "general.architecture")
    if not architecture:
        return 0
    keys = {f"{architecture}.{name}" for name in _SHAPE}
    shape = read_numbers(path, keys)
    return kv_cache_bytes({name: shape.get(f"{architecture}.{name}") for name in _SHAPE},
                          tokens)


def kv_cache_bytes(shape: Mapping[str, int | None], tokens: int) -> int:
    layers, width = shape.get("block_count"), shape.get("embedding_length")
    heads = shape.get("attention.head_count")
    kv_heads = shape.get("attention.head_count_kv") or heads
    if not (layers and width and heads and kv_heads):
        return 0
    return 2 * layers * tokens * kv_heads * (width // heads) * _F16_BYTES


def footprint(file_bytes: int, kv_cache: int, measured: int | None) -> int:
    """What a model counts against the budget: its estimate, or what its worker was
    measured holding when that is more."""
    estimate = file_bytes + kv_cache
    return max(estimate, measured or 0)


_SHAPE = ("block_count", "embedding_length", "attention.head_count",
          "attention.head_count_kv")
