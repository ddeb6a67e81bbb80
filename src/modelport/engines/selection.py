"""Which engine serves an `engine: auto` model, from its files and this machine's hardware.

Rules (issue 3): a .gguf file goes to llama.cpp; a Hugging Face checkpoint folder goes
to vLLM when vLLM and a GPU are both present, otherwise to transformers with one
warning saying why. The probes below never import vLLM, and import torch only on a
machine that shows signs of a GPU, so `modelport check` stays fast on CPU machines.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

from modelport.config import AutoModel
from modelport.errors import ConfigError

_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.I)
_NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
_ROCM_DEVICE = Path("/dev/kfd")


def vllm_available() -> bool:
    """vLLM is installed (found without importing it: its import takes seconds)."""
    return _module_installed("vllm")


def gpu_available() -> bool:
    """A CUDA (or ROCm) GPU is usable by torch."""
    if "torch" in sys.modules:
        return _torch_sees_gpu()
    if not _gpu_driver_present():
        return False  # no driver, no GPU: skip importing torch
    if _module_installed("torch"):
        return _torch_sees_gpu()
    return True  # a driver without torch: vLLM would bring its own torch


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _gpu_driver_present() -> bool:
    return (_NVIDIA_DRIVER_FILE.exists() or shutil.which("nvidia-smi") is not None
            or _ROCM_DEVICE.exists())


def _torch_sees_gpu() -> bool:
    try:
        import torch
    except Exception:  # a broken torch install: treat as no GPU rather than crash
        return False
    return bool(torch.cuda.is_available())


def gguf_file_in(path: Path) -> Path | None:
    """The GGUF file `path` names: itself, or the single model in a folder.

    A model split into shards (`name-00001-of-00003.gguf`) counts as one model; llama.cpp
    loads it from the first shard. Several different GGUF files are ambiguous.
    """
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".gguf")
    models: dict[str, Path] = {}
    for file in files:
        split = _SPLIT_GGUF.match(file.name)
        stem = split.group("stem") if split else file.name
        if not split or split.group("part") == "00001":
            models.setdefault(stem, file)
    if len(models) > 1:
        names = ", ".join(sorted(p.name for p in models.values()))
        raise ConfigError(
            f"{path} holds several GGUF models ({names}); set `path` to one of the files"
        )
    return next(iter(models.values()), None)


def is_hf_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def choose_engine(model: AutoModel, path: Path, *, has_vllm: bool,
                  has_gpu: bool) -> tuple[str, str | None]:
    """(engine, warning or None) for an `engine: auto` model whose files are at `path`."""
    if not path.exists():
        raise ConfigError(f"model '{model.name}': {path} does not exist")
    if is_hf_checkpoint(path):
        return _checkpoint_engine(model, has_vllm=has_vllm, has_gpu=has_gpu)
    if gguf_file_in(path) is not None:
        return "llamacpp", None
    raise ConfigError(f"model '{model.name}': engine auto cannot serve {path}: "
                      f"{_describe(path)}; it needs a .gguf file, a folder with one .gguf "
                      "file, or a Hugging Face checkpoint folder (with config.json)")


def _checkpoint_engine(model: AutoModel, *, has_vllm: bool,
                       has_gpu: bool) -> tuple[str, str | None]:
    if model.device in ("cpu", "mps"):
        return "transformers", None  # vLLM serves CUDA GPUs; the user asked for another device
    if has_vllm and has_gpu:
        return "vllm", None
    missing = [reason for reason, absent in (("vLLM is not installed", not has_vllm),
                                             ("no GPU was found", not has_gpu)) if absent]
    return "transformers", (
        f"model '{model.name}': served with transformers because {' and '.join(missing)} "
        "(vLLM, on a CUDA GPU, is faster for Hugging Face checkpoints: pip install vllm)"
    )


def _describe(path: Path) -> str:
    if path.is_file():
        return f"it is a {path.suffix or 'extensionless'} file"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return "the folder is empty"
    shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
    return f"the folder has no config.json and no .gguf file (it contains: {shown})"


def check_vllm_requested(has_vllm: bool, has_gpu: bool, model_name: str = "") -> None:
    """`engine: vllm` is an explicit request: refuse it clearly instead of falling back."""
    if has_vllm and has_gpu:
        return
    missing = [reason for reason, absent in (
        ("the vllm package is not installed (pip install vllm)", not has_vllm),
        ("no CUDA GPU was found", not has_gpu)) if absent]
    label = f"model '{model_name}': " if model_name else ""
    raise ConfigError(
        f"{label}engine: vllm cannot start: {' and '.join(missing)}. Use engine: auto to "
        "fall back to transformers when vLLM cannot run, or engine: transformers."
    )

