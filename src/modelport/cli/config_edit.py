"""Adding one model to a modelport.yaml by hand-editing its text, so the user's comments
and layout stay as they wrote them (a YAML round trip would drop every comment)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from modelport.config import config_from_text
from modelport.errors import ConfigError

_MODELS_KEY = re.compile(r"^models:[ \t]*(\[\][ \t]*)?(#.*)?$", re.M)
_ITEM = re.compile(r"^([ \t]*)- ")


def entry_line(entry: dict) -> str:
    # JSON is YAML: one flow mapping per line, every string quoted.
    return "- " + orjson.dumps(entry).decode()


def with_model(text: str, entry: dict) -> str:
    """`text` with `entry` added as the first item of its top-level `models:` list."""
    found = _MODELS_KEY.search(text)
    if found is None:
        return text.rstrip("\n") + ("\n" if text.strip() else "") + \
            f"models:\n  {entry_line(entry)}\n"
    if found.group(1):  # `models: []`
        return text[:found.start()] + f"models:\n  {entry_line(entry)}" + text[found.end():]
    after = text[found.end():]
    indent = "  "
    for line in after.splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            item = _ITEM.match(line)
            indent = item.group(1) if item else indent
            break
    return text[:found.end()] + f"\n{indent}{entry_line(entry)}" + after


def add_model(config_path: Path, entry: dict) -> None:
    """Add `entry` to the config file (created when missing); the result must load, or the
    file is left as it was."""
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    before = [model.name for model in config_from_text(text, config_path).models] \
        if text.strip() else []
    if entry["name"] in before:
        raise ConfigError(f"{config_path} already has a model named '{entry['name']}'; "
                          "the download is there, the config was left as it was")
    updated = with_model(text, entry)
    after = [model.name for model in config_from_text(updated, config_path).models]
    if after != [entry["name"], *before]:
        # A layout this edit does not understand (a flow list, an anchor): never write a
        # file that lost a model.
        raise ConfigError(f"{config_path}: could not add the model to its `models:` list "
                          f"without changing the others; add it by hand:\n  {entry_line(entry)}")
    config_path.write_text(updated, encoding="utf-8")
