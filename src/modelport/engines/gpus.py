"""This machine's NVIDIA GPUs and their memory, read from `nvidia-smi` (never torch: the
gateway that asks must not load it)."""

from __future__ import annotations

import functools
import shutil
import subprocess

_QUERY = ["--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]


@functools.cache
def gpu_memory_bytes() -> dict[str, int]:
    """{"cuda:0": bytes, ...} for every GPU nvidia-smi lists; {} without one."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return {}
    try:
        listing = subprocess.run([command, *_QUERY], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_gpu_listing(listing)


def parse_gpu_listing(listing: str) -> dict[str, int]:
    """nvidia-smi's `index, memory.total` lines (MiB) as bytes per device."""
    memory: dict[str, int] = {}
    for line in listing.splitlines():
        index, _, mib = line.partition(",")
        if index.strip().isdigit() and mib.strip().isdigit():
            memory[f"cuda:{int(index)}"] = int(mib) * 1024 * 1024
    return memory
