"""One imported `models:` entry, and what became of each old entry (the import table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportedModel:
    """One `models:` entry and the comment lines written above it."""

    entry: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    kind: str = "llm"  # llm | embedding | reranker
    old_name: str = ""  # the name in the old config, when it had to change
    origin: str = ""  # the old entry it came from, e.g. llm_model_dict['gpt-4']
    also: list[str] = field(default_factory=list)  # other old entries that shaped it

    @property
    def name(self) -> str:
        return self.entry["name"]


@dataclass(frozen=True)
class Skipped:
    """An old entry that did not become a model, and why."""

    origin: str
    reason: str


def label_of(origin: str) -> str:
    """`model_config.py line 33: X['a']` -> `X['a']`."""
    return origin.partition(": ")[2] or origin


def from_comment(origin: str) -> str:
    """`model_config.py line 33: X['a']` -> `from X['a'] (model_config.py line 33)`."""
    where, _, label = origin.partition(": ")
    return f"from {label} ({where})" if label else f"from {origin}"


def became(model: ImportedModel) -> str:
    """A one-line summary of the new entry for the import table."""
    entry = model.entry
    if entry["engine"] == "plugin":
        where = f"class {entry['provider']} (to port)"
    else:
        where = entry.get("path") or entry.get("base_url") or f"vendor {entry.get('vendor')}"
    parts = [f"{entry['name']}: {entry['engine']}, {where}"]
    if entry.get("port"):
        parts.append(f"worker port {entry['port']}")
    if entry.get("autostart") is False:
        parts.append("not started by default")
    return "; ".join(parts)
