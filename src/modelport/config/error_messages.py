"""Explaining a bad config file: one line per invalid field, and YAML syntax errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelport.config.model_kinds import ENGINE_NAMES, MODEL_KINDS
from modelport.config.server import ServerConfig


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """Turn a pydantic location into `models[0] (name 'x').field`, skipping union tags."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name")
                if name:
                    label += f" (name '{name}')"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if isinstance(node, dict) and item not in node and item == node.get("engine"):
                # pydantic inserts the discriminator value ('llamacpp') into the location
                continue
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _allowed_fields(loc: tuple[Any, ...], data: Any) -> list[str]:
    if loc and loc[0] == "server":
        return list(ServerConfig.model_fields)
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        try:
            engine = data["models"][loc[1]].get("engine")
        except (KeyError, IndexError, TypeError, AttributeError):
            engine = None
        for cls in MODEL_KINDS:
            if cls.model_fields["engine"].annotation.__args__[0] == engine:  # type: ignore[union-attr]
                return list(cls.model_fields)
    if len(loc) == 1:
        return ["server", "models", "vendors"]
    return []


def describe_validation_error(error: ValidationError, data: Any, source: str) -> str:
    """One line per invalid field: where it is, what is wrong, what to write instead."""
    lines = [f"{source}: {error.error_count()} invalid field(s)"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _field_path(loc, data)
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(loc[:-1] if len(loc) > 1 else loc, data)
            suggestion = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean '{suggestion[0]}'? " if suggestion else ""
            message = f"unknown field; {hint}allowed fields: {', '.join(sorted(allowed))}"
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            message = f"`engine` must be one of: {', '.join(ENGINE_NAMES)}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"]
            if "input" in item and not isinstance(item["input"], (dict, list)):
                message += f" (got {item['input']!r})"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def describe_yaml_error(file: Path, error: yaml.YAMLError) -> str:
    # PyYAML names the source "<unicode string>" and counts from 0; say file:line:column
    # the way editors jump to it, then the parser's own explanation with its snippet.
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
    detail = str(error).replace('"<unicode string>"', f'"{file}"')
    return f"{where}: not valid YAML: {detail}"
