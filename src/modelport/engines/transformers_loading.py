"""Loading a Hugging Face checkpoint for the transformers engine: files, device, memory,
quantization and chat template, each refused at start-up with a ConfigError that says
what to change, never half-loaded or silently fetched from the network.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.chat_templates import BUILTIN_TEMPLATES, template_text
from modelport.config import TransformersModel
from modelport.engines.transformers_batch_plan import BATCHED, BatchSupport, batch_support
from modelport.errors import ConfigError

log = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CONTEXT_LENGTH_ATTRIBUTES = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
)

# quant_method in a checkpoint's quantization_config -> (importable module, pip name)
# that transformers 5 needs to load it. Checked up front so the error lists every
# missing package at once instead of one per restart.
_QUANTIZATION_PACKAGES: dict[str, list[tuple[str, str]]] = {
    "gptq": [("optimum", "optimum"), ("gptqmodel", "gptqmodel")],
    "awq": [("gptqmodel", "gptqmodel")],
    "bitsandbytes": [("bitsandbytes", "bitsandbytes")],
    "compressed-tensors": [("compressed_tensors", "compressed-tensors")],
    "torchao": [("torchao", "torchao")],
    "hqq": [("hqq", "hqq")],
    "aqlm": [("aqlm", "aqlm")],
    "eetq": [("eetq", "eetq")],
    "quanto": [("optimum.quanto", "optimum-quanto")],
}
_QUANTIZATION_HINTS = {
    "gptq": " (transformers 4.x used `auto-gptq`; transformers 5 uses `gptqmodel` + `optimum`)",
    "awq": " (transformers 4.x used `autoawq`; transformers 5 loads AWQ through `gptqmodel`)",
}


@dataclass
class LoadedCheckpoint:
    """A model ready to generate, with what the engine needs to know about it."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    chat_template: str | None  # the configured override; None means the tokenizer's own
    context_length: int
    input_device: str
    # accelerate's offload hooks move weights in and out per forward pass, so two
    # forwards at once would race (and MPS is not thread-safe); such models generate
    # one request at a time.
    serialize_forward: bool
    batch: BatchSupport = BATCHED  # whether the engine can batch its requests


def apply_visible_gpus(gpus: str | None) -> None:
    """Restrict the GPUs this process sees; must run before torch initialises CUDA."""
    if not gpus:
        return
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        current = os.environ.get("CUDA_VISIBLE_DEVICES")
        if current != gpus:
            raise ConfigError(
                f"gpus: '{gpus}' cannot be applied because CUDA is already initialised in "
                f"this process (CUDA_VISIBLE_DEVICES={current!r}); start the worker in a "
                "fresh process"
            )
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: cuda was requested but torch {torch.__version__} sees no CUDA GPU "
            "(a CPU-only torch build, no driver, or gpus/CUDA_VISIBLE_DEVICES hides them); "
            "use device: auto or cpu"
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: mps was requested but this machine has no Apple MPS backend")
    return requested


def load_checkpoint(model: TransformersModel, path: Path) -> LoadedCheckpoint:
    """Load the model and tokenizer that `model` describes from `path` (already resolved)."""
    apply_visible_gpus(model.gpus)
    source = _checkpoint_source(model, path)
    hf_config = _read_hf_config(source, model)
    prequantized = _prequantization_method(hf_config)
    _check_option_conflicts(model, prequantized)
    if prequantized:
        _require_packages(prequantized, _QUANTIZATION_PACKAGES.get(prequantized, []))

    if not (_importable("transformers") and _importable("torch")):
        raise ConfigError(
            f"model '{model.name}': engine transformers needs the packages `transformers` and "
            "`torch`: pip install 'modelport[transformers]'"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # cpu_int8 is a CPU feature, so it decides "auto" even on a machine with a GPU.
    device = "cpu" if model.cpu_int8 else resolve_device(model.device)
    common = {
        "local_files_only": not model.allow_download,
        "trust_remote_code": model.trust_remote_code,
    }
    tokenizer = _call_loader(AutoTokenizer.from_pretrained, source, model, **common)
    chat_template = _chat_template_override(model, tokenizer)

    kwargs: dict[str, Any] = {**common, "dtype": _torch_dtype(model, device, hf_config)}
    kwargs.update(_placement(model, device))
    if model.load_8bit or model.load_4bit:
        kwargs["quantization_config"] = _bitsandbytes_config(model, kwargs["dtype"])
    hf_model = _call_loader(AutoModelForCausalLM.from_pretrained, source, model, **kwargs)
    hf_model.eval()
    device_map = getattr(hf_model, "hf_device_map", None) or {}
    _check_offloading(model, device, device_map)
    if model.cpu_int8:
        quantize_linear_layers_int8(hf_model)
    return LoadedCheckpoint(
        model=hf_model,
        tokenizer=tokenizer,
        chat_template=chat_template,
        context_length=_context_length(model, hf_model.config),
        input_device=str(hf_model.device) if device != "cpu" else "cpu",
        serialize_forward=_needs_serial_forward(device, device_map),
        batch=_batch_support(model, hf_model),
    )


def _batch_support(model: TransformersModel, hf_model: Any) -> BatchSupport:
    from modelport.engines.transformers_kv import unbatchable

    support = batch_support(model, hf_model.config.to_dict(),
                            hf_model.generation_config.to_dict())
    reason = unbatchable(hf_model) if support.batched else None
    return BatchSupport(False, reason) if reason else support


def _needs_serial_forward(device: str, device_map: dict[str, Any]) -> bool:
    if device == "mps":
        return True  # the MPS backend is not safe to drive from several threads at once
    offloaded = any(place in ("cpu", "disk") for place in device_map.values())
    return device == "cuda" and offloaded


def quantize_linear_layers_int8(hf_model: Any) -> None:
    """Replace every nn.Linear by a dynamically quantized int8 one, and free the floats.

    Weights that stay in float (embeddings, norms) are copied out of the safetensors
    memory map: while any tensor still points into that map, every page read during
    quantization stays resident and the memory saving never shows.
    """
    import torch

    with warnings.catch_warnings():
        # torch marks torch.ao.quantization deprecated in favour of torchao, which is
        # not a dependency; the eager API still works in the pinned torch 2.13.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            hf_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    with torch.no_grad():
        for tensor in [*hf_model.parameters(), *hf_model.buffers()]:
            tensor.data = tensor.data.clone()
    gc.collect()
    _return_freed_memory_to_os()


def _return_freed_memory_to_os() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its own policy
        pass


def _checkpoint_source(model: TransformersModel, path: Path) -> str:
    if path.is_dir():
        _check_local_files(path)
        return str(path)
    if path.exists():
        raise ConfigError(
            f"model '{model.name}': {path} is a file; the transformers engine loads a "
            "checkpoint folder (config.json, *.safetensors, tokenizer files). "
            "For a .gguf file use engine: llamacpp"
        )
    if model.allow_download:
        return model.path  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct
    raise ConfigError(
        f"model '{model.name}': folder {path} does not exist. Offline mode "
        "(allow_download: false): modelport only loads local files and will not fetch "
        f"'{model.path}' from the Hugging Face hub. Download the checkpoint into {path}, "
        "or set allow_download: true to fetch it"
    )


def _check_local_files(folder: Path) -> None:
    def missing(what: str) -> ConfigError:
        return ConfigError(
            f"offline mode: {what} in {folder}; modelport does not download missing files "
            "(allow_download: false). Copy the complete checkpoint there"
        )

    if not (folder / "config.json").is_file():
        raise missing("config.json is missing")
    weights = [name for name in _WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise missing(f"no weights file ({', '.join(_WEIGHT_FILES)}) was found")
    for index_name in (name for name in weights if name.endswith(".index.json")):
        shards = set(json.loads((folder / index_name).read_text()).get("weight_map", {}).values())
        absent = sorted(shard for shard in shards if not (folder / shard).is_file())
        if absent:
            raise missing(f"weight shard {absent[0]} listed in {index_name} is missing")
    if not any(_looks_like_tokenizer_file(file.name) for file in folder.iterdir()):
        raise missing(
            "no tokenizer file (tokenizer.json, tokenizer.model, vocab.*, *.tiktoken) was found"
        )


def _looks_like_tokenizer_file(name: str) -> bool:
    # Tokenizers ship under many names (tokenizer.json, spiece.model, qwen.tiktoken,
    # vocab.txt); matching loosely avoids refusing a complete but unusual checkpoint.
    return name.startswith(("tokenizer", "vocab", "spiece", "sentencepiece")) or name.endswith(
        (".tiktoken", ".model")
    )


def _read_hf_config(source: str, model: TransformersModel) -> dict[str, Any]:
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return {}  # a hub id: transformers reads the config after downloading it
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model '{model.name}': {config_file} is not valid JSON: {error}"
        ) from None
    return data if isinstance(data, dict) else {}


def _prequantization_method(hf_config: dict[str, Any]) -> str | None:
    quantization = hf_config.get("quantization_config")
    if not isinstance(quantization, dict):
        return None
    method = quantization.get("quant_method")
    if method is None and (quantization.get("load_in_8bit") or quantization.get("load_in_4bit")):
        method = "bitsandbytes"
    return str(method).lower() if method else None


def _check_option_conflicts(model: TransformersModel, prequantized: str | None) -> None:
    if model.load_8bit and model.load_4bit:
        raise ConfigError(f"model '{model.name}': choose one of load_8bit and load_4bit")
    if model.cpu_int8 and (model.load_8bit or model.load_4bit):
        raise ConfigError(
            f"model '{model.name}': cpu_int8 (CPU) and load_8bit/load_4bit (bitsandbytes) "
            "are alternatives; choose one"
        )
    if model.cpu_int8 and model.device not in ("auto", "cpu"):
        raise ConfigError(
            f"model '{model.name}': cpu_int8 quantizes for the CPU but device is "
            f"{model.device}; use load_8bit/load_4bit on a GPU, or device: cpu"
        )
    wants_quantization = model.cpu_int8 or model.load_8bit or model.load_4bit
    if prequantized and wants_quantization:
        raise ConfigError(
            f"model '{model.name}': the checkpoint is already quantized ({prequantized}); "
            "remove load_8bit/load_4bit/cpu_int8"
        )


def _require_packages(method: str, packages: list[tuple[str, str]]) -> None:
    absent = [pip_name for module, pip_name in packages if not _importable(module)]
    if absent:
        raise ConfigError(
            f"this is a {method.upper()}-quantized checkpoint; loading it through "
            f"transformers needs {', '.join(f'`{name}`' for name in absent)}, which "
            f"{'is' if len(absent) == 1 else 'are'} not installed: "
            f"pip install {' '.join(absent)}{_QUANTIZATION_HINTS.get(method, '')}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package of a dotted name
        return False


def _call_loader(loader: Any, source: str, model: TransformersModel, **kwargs: Any) -> Any:
    """Run a from_pretrained; its missing-file and missing-package errors become ConfigError."""
    try:
        return loader(source, **kwargs)
    except ImportError as error:
        raise ConfigError(f"model '{model.name}': a package is missing: {error}") from error
    except (OSError, ValueError) as error:
        mode = (
            "offline mode (allow_download: false), so nothing is fetched from the hub"
            if not model.allow_download
            else "downloads allowed"
        )
        raise ConfigError(
            f"model '{model.name}': could not load {source} ({mode}): {error}"
        ) from error


def _chat_template_override(model: TransformersModel, tokenizer: Any) -> str | None:
    template = template_text(model.chat_template)
    if template is not None and "{" not in template:
        raise ConfigError(
            f"model '{model.name}': chat_template {template!r} is neither a built-in template "
            f"({', '.join(BUILTIN_TEMPLATES)}), nor a file, nor Jinja text")
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"model '{model.name}' has no chat template, so it looks like a base model, and "
            "base models cannot give correct chat output. Use a chat/instruct model, or set "
            "chat_template (a Jinja template) if you know the format it was trained on"
        )
    if template is not None:
        _check_template_renders(model, tokenizer, template)
    return template


def _check_template_renders(model: TransformersModel, tokenizer: Any, template: str) -> None:
    sample = [{"role": "user", "content": "Hello"}]
    try:
        tokenizer.apply_chat_template(
            sample, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except Exception as error:  # jinja2 raises several unrelated types
        raise ConfigError(
            f"model '{model.name}': chat_template does not render a one-message "
            f"conversation: {type(error).__name__}: {error}"
        ) from None


def _torch_dtype(model: TransformersModel, device: str, hf_config: dict[str, Any]) -> Any:
    import torch

    if model.cpu_int8:
        return torch.float32  # dynamic quantization takes float32 Linear layers
    if model.dtype != "auto":
        return getattr(torch, model.dtype)
    if device == "cpu" and str(hf_config.get("dtype") or hf_config.get("torch_dtype")) == "float16":
        # float16 matmuls are emulated and slow on most CPUs; bfloat16 and float32 are not.
        return torch.float32
    return "auto"  # the checkpoint's own dtype


def _placement(model: TransformersModel, device: str) -> dict[str, Any]:
    if device == "cpu":
        if model.max_gpu_memory or model.gpus:
            log.warning("model '%s': gpus/max_gpu_memory ignored on device cpu", model.name)
        return {}
    if device == "mps":
        return {"device_map": {"": "mps"}}
    return {"device_map": "auto", "max_memory": _max_memory_map(model)}


def _max_memory_map(model: TransformersModel) -> dict[Any, Any]:
    """GPU caps for accelerate; the CPU only joins the map when offloading is allowed."""
    import torch

    budget: dict[Any, Any] = {}
    for index in range(torch.cuda.device_count()):
        if model.max_gpu_memory:
            budget[index] = model.max_gpu_memory
        else:
            free, _total = torch.cuda.mem_get_info(index)
            budget[index] = int(free * 0.9)  # room for activations and the KV cache
    if model.cpu_offloading:
        budget["cpu"] = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") * 0.9)
    return budget


def _bitsandbytes_config(model: TransformersModel, dtype: Any) -> Any:
    option = "load_8bit" if model.load_8bit else "load_4bit"
    if not _importable("bitsandbytes"):
        raise ConfigError(
            f"model '{model.name}': {option} needs the package `bitsandbytes`, which is not "
            "installed: pip install bitsandbytes (it needs a CUDA GPU on most platforms)"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if model.load_8bit:
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=model.cpu_offloading
        )
    compute_dtype = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_type="nf4",
        llm_int8_enable_fp32_cpu_offload=model.cpu_offloading,
    )


def _check_offloading(model: TransformersModel, device: str, device_map: dict[str, Any]) -> None:
    offloaded = sorted({str(place) for place in device_map.values() if place in ("cpu", "disk")})
    if device == "cuda" and offloaded and not model.cpu_offloading:
        raise ConfigError(
            f"model '{model.name}' does not fit in GPU memory"
            f"{f' (max_gpu_memory: {model.max_gpu_memory})' if model.max_gpu_memory else ''}: "
            f"parts would be placed on {', '.join(offloaded)}. Set cpu_offloading: true, "
            "load_8bit/load_4bit, more gpus, or a larger max_gpu_memory"
        )


def _context_length(model: TransformersModel, hf_config: Any) -> int:
    if model.context_length:
        return model.context_length
    configs = [hf_config, getattr(hf_config, "text_config", None)]
    for config in filter(None, configs):
        for attribute in _CONTEXT_LENGTH_ATTRIBUTES:
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
    raise ConfigError(
        f"model '{model.name}': its config.json states no context length "
        f"({', '.join(_CONTEXT_LENGTH_ATTRIBUTES)}); set context_length"
    )
