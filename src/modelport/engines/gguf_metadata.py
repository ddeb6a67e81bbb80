"""Read values from a GGUF file's metadata (e.g. `tokenizer.chat_template`, the layer
count) without loading the model: the header is parsed up to those keys, skipping
everything else."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"GGUF"
# Sizes of the fixed-width value types, by GGUF type id.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# Integer types by GGUF type id: their size and struct code.
_INTEGERS = {0: (1, "<B"), 1: (1, "<b"), 2: (2, "<H"), 3: (2, "<h"), 4: (4, "<I"),
             5: (4, "<i"), 10: (8, "<Q"), 11: (8, "<q")}


def read_string(path: Path, key: str) -> str | None:
    """The string value of `key`, or None when the file has no such key (or is no GGUF)."""
    with open(path, "rb") as file:
        if file.read(4) != _MAGIC:
            return None
        version = _u32(file)
        if version < 2:
            return None  # GGUF v1 used 32-bit counts; no model in use still has it
        _u64(file)  # tensor count
        for _ in range(_u64(file)):
            name = _string(file).decode("utf-8", "replace")
            kind = _u32(file)
            if name == key:
                return _string(file).decode("utf-8", "replace") if kind == _STRING else None
            _skip(file, kind)
    return None


def read_numbers(path: Path, keys: set[str]) -> dict[str, int]:
    """The integer values among `keys` found in the file's metadata (missing ones left
    out; {} for a file that is no GGUF)."""
    found: dict[str, int] = {}
    with open(path, "rb") as file:
        if file.read(4) != _MAGIC or _u32(file) < 2:
            return found
        _u64(file)  # tensor count
        for _ in range(_u64(file)):
            name = _string(file).decode("utf-8", "replace")
            kind = _u32(file)
            if name in keys and kind in _INTEGERS:
                size, code = _INTEGERS[kind]
                found[name] = struct.unpack(code, _exactly(file, size))[0]
                if len(found) == len(keys):
                    break
            else:
                _skip(file, kind)
    return found


def _u32(file: BinaryIO) -> int:
    return struct.unpack("<I", _exactly(file, 4))[0]


def _u64(file: BinaryIO) -> int:
    return struct.unpack("<Q", _exactly(file, 8))[0]


def _string(file: BinaryIO) -> bytes:
    return _exactly(file, _u64(file))


def _exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise ValueError("GGUF metadata ends early")
    return data


def _skip(file: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        file.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        file.seek(_u64(file), 1)
    elif kind == _ARRAY:
        item_kind = _u32(file)
        count = _u64(file)
        if item_kind in _FIXED:
            file.seek(_FIXED[item_kind] * count, 1)
        else:
            for _ in range(count):
                _skip(file, item_kind)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
