"""What a local model holds in memory once loaded, and on which devices, estimated before
loading it, so that `server.memory_budget` counts memory rather than files.

- A GGUF model on llama.cpp holds its weights (the file, mapped) and a KV cache of
  `context_length x parallel` tokens (llama.cpp's n_ctx): 2 (keys and values) x layers x
  tokens x KV heads x head size x 2 bytes (f16). With `gpu_layers` it is counted on the
  GPU (cuda:0), else on the CPU.
- A Hugging Face checkpoint holds its weights in the dtype it is loaded in: the files'
  weights times that dtype's size over the files' own (float16 from float32 files halves
  them; load_8bit and load_4bit give one byte and half a byte per weight), split evenly
  over the GPUs it is given.
- A vLLM server takes `gpu_memory_utilization` of each GPU it runs on, whatever its files.
- Once a worker on the CPU runs, what it really holds (its resident memory) is used when
  larger.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelport.engines.gguf_metadata import read_numbers, read_string

_F16_BYTES = 2
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Bytes per weight of a dtype, by the names configs use, and safetensors' names for them.
_DTYPE_BYTES = {"float64": 8.0, "float32": 4.0, "float16": 2.0, "bfloat16": 2.0,
                "int8": 1.0, "int4": 0.5}
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16",
                       "BF16": "bfloat16", "I8": "int8", "U8": "int8"}


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


def footprint(estimate: Mapping[str, int], measured: int | None) -> dict[str, int]:
    """What a model counts against the budgets per device: its estimate, or, for a model
    held in the CPU's memory alone, what its workers were measured holding when more."""
    counted = dict(estimate)
    if measured and set(counted) <= {"cpu"}:
        counted["cpu"] = max(counted.get("cpu", 0), measured)
    return counted


# -- devices ------------------------------------------------------------------------------

def devices_of(config: Any, replica: int, gpu_present: bool) -> tuple[str, ...]:
    """The devices replica `replica` of a local model holds memory on (`cuda:N` by the
    machine's GPU index, as nvidia-smi numbers them). `device: auto` means a GPU when the
    machine has one, as the engines choose."""
    gpus = _gpu_ids(config.replica_gpus(replica) if hasattr(config, "replica_gpus") else None)
    if config.engine == "vllm":
        needed = config.gpus_needed
        return tuple(f"cuda:{i}" for i in (gpus or list(range(needed)))[:needed])
    device = getattr(config, "device", "cpu")
    if device == "auto":
        device = "cuda" if gpu_present else "cpu"
    if config.engine == "llamacpp":
        return ("cuda:0",) if device == "cuda" and config.gpu_layers != 0 else ("cpu",)
    if device == "cuda":
        return tuple(f"cuda:{i}" for i in gpus or [0])
    return (device,)


def spread(total: int, devices: tuple[str, ...]) -> dict[str, int]:
    """`total` bytes split evenly over `devices` (a model sharded over its GPUs)."""
    share = total // max(1, len(devices))
    return {device: share for device in devices}


def vllm_bytes(utilization: float, devices: tuple[str, ...],
               device_memory: Mapping[str, int]) -> dict[str, int]:
    """What a vLLM server takes: `gpu_memory_utilization` of each of its GPUs (a GPU of
    unknown size counts as 0 here; the caller knows better)."""
    return {device: int(utilization * device_memory.get(device, 0)) for device in devices}


def _gpu_ids(gpus: str | None) -> list[int]:
    return [int(g) for g in (gpus or "").split(",") if g.strip().isdigit()]


# -- checkpoints --------------------------------------------------------------------------

def checkpoint_bytes(folder: Path, loaded_as: str | None) -> int:
    """Bytes a checkpoint folder's weights take loaded in dtype `loaded_as` (None: as the
    files store them), plus its other files."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = sum(p.stat().st_size for p in files if p.suffix in _WEIGHT_SUFFIXES)
    others = sum(p.stat().st_size for p in files if p.suffix not in _WEIGHT_SUFFIXES)
    stored = stored_dtype(folder)
    if loaded_as is None or stored is None or loaded_as == stored:
        return weights + others
    return round(weights * _DTYPE_BYTES[loaded_as] / _DTYPE_BYTES[stored]) + others


def stored_dtype(folder: Path) -> str | None:
    """The dtype of the checkpoint's weights: its config's, else the first tensor's of a
    safetensors file; None when neither says."""
    try:
        config = json.loads((folder / "config.json").read_text())
        named = config.get("torch_dtype") or config.get("dtype")
        if named in _DTYPE_BYTES:
            return named
    except (OSError, ValueError, AttributeError):
        pass
    for path in sorted(folder.glob("*.safetensors")):
        return _safetensors_dtype(path)
    return None


def _safetensors_dtype(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(min(length, 100_000_000)))
    except (OSError, ValueError, struct.error):
        return None
    for name, tensor in header.items():
        if name != "__metadata__" and isinstance(tensor, dict):
            return _SAFETENSORS_DTYPES.get(tensor.get("dtype", ""))
    return None


def loaded_dtype(config: Any, device: str, stored: str | None) -> str | None:
    """The dtype a transformers model is loaded in (None: as stored), as the engine
    chooses it: the configured dtype; 8-bit and 4-bit loading; float32 on a CPU for
    float16 files (its float16 matmuls are slow) and for dynamic int8 quantization."""
    if getattr(config, "load_4bit", False):
        return "int4"
    if getattr(config, "load_8bit", False):
        return "int8"
    if getattr(config, "cpu_int8", False):
        return "float32"
    dtype = getattr(config, "dtype", "auto")
    if dtype in _DTYPE_BYTES:
        return dtype
    if device == "cpu" and stored == "float16":
        return "float32"
    return None


_SHAPE = ("block_count", "embedding_length", "attention.head_count",
          "attention.head_count_kv")
