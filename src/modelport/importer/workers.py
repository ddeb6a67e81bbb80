"""Translate the old per-model worker options (FSCHAT_MODEL_WORKERS) into model fields.

Each old worker was a FastChat process with its own options; in modelport most of them
are fields of the model entry (host, port, device, parallel), engine options (`options:`
of an `engine: auto` model, fields of an `engine: vllm` model), or no longer needed.
Whatever does not carry over is reported, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Locate = Callable[..., str]  # (variable, *keys) -> "server_config.py line 30: NAME['k']"

DEVICES = ("auto", "cpu", "cuda", "mps")
_TRANSFORMERS_DTYPES = {"auto": "auto", "float32": "float32", "float": "float32",
                        "float16": "float16", "half": "float16", "bfloat16": "bfloat16"}

# Values that only restate the old default: dropping them changes nothing.
_OLD_DEFAULTS: dict[str, Any] = {
    "gptq_wbits": 16, "awq_wbits": 16, "gptq_groupsize": -1, "awq_groupsize": -1,
    "num_gpus": 1, "stream_interval": 2, "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1, "dtype": "auto", "infer_turbo": False,
}
# FastChat plumbing that modelport does itself (registration, controller addresses).
_PLUMBING = {"model_names", "no_register", "controller_address", "worker_address",
             "embed_in_truncate", "model_path", "infer_turbo"}
# vLLM engine arguments of the old vllm worker that `vllm serve` still takes under the
# same name (an underscore becomes a dash): passed through as extra_args.
_VLLM_PASSTHROUGH = {"seed", "block_size", "max_num_batched_tokens", "max_num_seqs",
                     "enforce_eager", "tokenizer", "tokenizer_mode", "revision",
                     "load_format", "pipeline_parallel_size", "disable_log_stats",
                     "kv_cache_dtype", "max_parallel_loading_workers"}
# VllmModel fields with the same name as the old option, and what the field accepts.
_VLLM_FIELDS: dict[str, Callable[[Any], bool]] = {
    "tensor_parallel_size": lambda v: isinstance(v, int) and v >= 1,
    "gpu_memory_utilization": lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
    "max_model_len": lambda v: isinstance(v, int) and v >= 64,
    "quantization": lambda v: isinstance(v, str),
    "trust_remote_code": lambda v: v is True,
}
_TRANSFORMERS_ONLY = {"load_8bit", "cpu_offloading", "max_gpu_memory", "gpus"}
_QUANTIZATION_BITS = {"gptq_wbits", "awq_wbits"}
_QUANTIZATION_DETAILS = {"gptq_groupsize", "gptq_act_order", "awq_groupsize"}
_QUANTIZATION_FILES = {"gptq_ckpt", "awq_ckpt"}


@dataclass
class WorkerSettings:
    """What one model takes from FSCHAT_MODEL_WORKERS."""

    fields: dict[str, Any] = field(default_factory=dict)  # top-level model fields
    options: dict[str, Any] = field(default_factory=dict)  # `options:` of engine auto
    extra_args: list[str] = field(default_factory=list)  # `extra_args:` of engine vllm
    warnings: list[str] = field(default_factory=list)


def wants_vllm(workers: dict[str, Any], model_name: str) -> bool:
    """`"infer_turbo": "vllm"` made the old system serve the model with vLLM."""
    merged = {**_entry(workers, "default"), **_entry(workers, model_name)}
    return merged.get("infer_turbo") == "vllm"


def worker_settings(workers: dict[str, Any], model_name: str, engine: str, locate: Locate,
                    *, include_default: bool = True) -> WorkerSettings:
    """Settings for `model_name` served by `engine` (auto, vllm, llamacpp, sentence-transformers).

    The "default" entry applies to every LLM except its host and port: one port cannot
    serve every worker, and modelport picks a free port for a worker without one.
    """
    default = {k: v for k, v in _entry(workers, "default").items()
               if k not in ("host", "port")} if include_default else {}
    own = _entry(workers, model_name)
    merged = {**default, **own}
    origin = {key: ("default" if key not in own else model_name) for key in merged}
    translator = _Translator(engine, merged, locate, origin, model_name)
    for key, value in merged.items():
        translator.translate(key, value)
    return translator.settings


def _entry(workers: dict[str, Any], name: str) -> dict[str, Any]:
    entry = workers.get(name)
    return entry if isinstance(entry, dict) else {}


class _Translator:
    def __init__(self, engine: str, merged: dict[str, Any], locate: Locate,
                 origin: dict[str, str], model_name: str) -> None:
        self.model_name = model_name
        self.engine = engine
        self.merged = merged
        self.locate = locate
        self.origin = origin
        self.settings = WorkerSettings()

    def warn(self, key: str, message: str) -> None:
        where = self.locate("FSCHAT_MODEL_WORKERS", self.origin[key], key)
        if self.origin[key] != self.model_name:
            where += f" (applied to {self.model_name!r})"
        self.settings.warnings.append(f"{where}: {message}")

    def translate(self, key: str, value: Any) -> None:
        if value is None or value is False or _OLD_DEFAULTS.get(key, object()) == value:
            return
        if key in _PLUMBING:
            return
        if key in ("host", "port", "device"):
            self.placement(key, value)
        elif key == "conv_template":
            self.warn(key, "modelport uses the model's own chat template (from its "
                           "tokenizer_config.json); set chat_template only for a model "
                           "that has none; dropped")
        elif key == "stream_interval":
            self.warn(key, "modelport streams every token as it is generated; dropped")
        elif key in _QUANTIZATION_BITS:
            self.warn(key, "modelport reads GPTQ/AWQ settings from the checkpoint's own "
                           "config.json (quantization_config); point `path` at the "
                           "quantized checkpoint folder; dropped")
        elif key in _QUANTIZATION_DETAILS:
            return  # part of the checkpoint's quantization_config, like the bits above
        elif key in _QUANTIZATION_FILES:
            self.warn(key, "a separate quantized weights file is not supported; use a "
                           "GPTQ/AWQ checkpoint folder with its quantization_config as "
                           "`path`; dropped")
        elif self.engine == "vllm":
            self.vllm_option(key, value)
        elif self.engine == "auto":
            self.auto_option(key, value)
        elif self.engine == "llamacpp":
            self.common_option(key, value)
        else:
            self.unsupported(key)

    def placement(self, key: str, value: Any) -> None:
        if key == "host" and isinstance(value, str) and value:
            self.settings.fields["host"] = value
        elif key == "port" and isinstance(value, int) and 1 <= value <= 65535:
            self.settings.fields["port"] = value
        elif key == "device" and value in DEVICES:
            if value != "auto":  # auto is modelport's default too
                self.settings.fields["device"] = value
        else:
            allowed = "one of " + ", ".join(DEVICES) if key == "device" else "valid"
            self.warn(key, f"{value!r} is not {allowed}; dropped")

    def common_option(self, key: str, value: Any) -> None:
        """Options every local chat engine has as a model field."""
        if key == "limit_worker_concurrency":
            if isinstance(value, int) and 1 <= value <= 256:
                self.settings.fields["parallel"] = value
            else:
                self.warn(key, f"{value!r} is outside 1..256; dropped")
        elif key in ("max_model_len", "context_length"):
            if isinstance(value, int) and value >= 64:
                self.settings.fields["context_length"] = value
            else:
                self.warn(key, f"{value!r} is not a context length of at least 64; dropped")
        else:
            self.unsupported(key)

    def auto_option(self, key: str, value: Any) -> None:
        options = self.settings.options
        if key in ("load_8bit", "cpu_offloading", "trust_remote_code") and value is True:
            options[key] = True
        elif key == "max_gpu_memory" and isinstance(value, str):
            options[key] = value
        elif key == "gpus":
            options["gpus"] = _gpu_list(value)
        elif key == "num_gpus" and isinstance(value, int) and value > 1:
            # FastChat spread the model over the first num_gpus visible GPUs
            if self.merged.get("gpus") is None:
                options["gpus"] = ",".join(str(i) for i in range(value))
        elif key == "dtype" and value in _TRANSFORMERS_DTYPES:
            options["dtype"] = _TRANSFORMERS_DTYPES[value]
        elif key in _VLLM_FIELDS or key in _VLLM_PASSTHROUGH:
            self.warn(key, "a vLLM option, and this model is not in VLLM_MODEL_DICT "
                           "(engine: auto); dropped")
        else:
            self.common_option(key, value)

    def vllm_option(self, key: str, value: Any) -> None:
        fields = self.settings.fields
        if key in _VLLM_FIELDS:
            if _VLLM_FIELDS[key](value):
                fields[key] = value
            else:
                self.warn(key, f"{value!r} is not a valid value; dropped")
        elif key == "dtype":
            fields["dtype"] = str(value)
        elif key == "num_gpus" and isinstance(value, int) and value > 1:
            # FastChat's vLLM worker used num_gpus as the tensor parallel size
            if self.merged.get("tensor_parallel_size") in (None, 1):
                fields["tensor_parallel_size"] = value
        elif key in _VLLM_PASSTHROUGH:
            flag = "--" + key.replace("_", "-")
            self.settings.extra_args.extend([flag] if value is True else [flag, str(value)])
        elif key == "limit_worker_concurrency":
            self.warn(key, "vLLM batches concurrent requests itself (see max_num_seqs); "
                           "dropped")
        elif key in _TRANSFORMERS_ONLY:
            hint = " (set CUDA_VISIBLE_DEVICES for the worker instead)" if key == "gpus" else ""
            self.warn(key, f"not a vLLM option{hint}; dropped")
        else:
            self.unsupported(key)

    def unsupported(self, key: str) -> None:
        self.warn(key, f"not supported for engine {self.engine}; dropped")


def _gpu_list(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
