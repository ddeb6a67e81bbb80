"""Device names of `server.memory_budget`: `cpu`, `mps`, `cuda:N`."""

from __future__ import annotations

import re

_DEVICE = re.compile(r"^(cpu|mps|cuda:\d+)$")


def check_memory_budget(value: object) -> object:
    """A budget as written (one size, or sizes per device), refused with a clear reason
    when a device name is unknown or a size is negative; sizes are parsed afterwards."""
    if isinstance(value, dict):
        for device, size in value.items():
            if not isinstance(device, str) or not _DEVICE.match(device):
                raise ValueError(f"unknown device '{device}': use cpu, mps or cuda:N "
                                 "(cuda:0, cuda:1, ...)")
            _not_negative(size, f" ({device}: {size})")
    elif value is not None:
        _not_negative(value, "")
    return value


def _not_negative(size: object, where: str) -> None:
    negative = (isinstance(size, (int, float)) and not isinstance(size, bool) and size < 0) \
        or (isinstance(size, str) and size.strip().startswith("-"))
    if negative:
        raise ValueError(f"a memory budget cannot be negative{where}")
