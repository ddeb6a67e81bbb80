"""`modelport import-config`: turn the old system's Python config into modelport.yaml.

The old files are read, never executed (see pysource); the result is checked against
modelport's own config schema before it is returned, so what is written always loads.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.importer.convert import convert
from modelport.importer.pysource import read_python_config
from modelport.importer.render import render_yaml

__all__ = ["ImportResult", "import_old_config", "validate_imported"]

_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


@dataclass
class ImportResult:
    yaml_text: str  # a complete modelport.yaml
    config_dict: dict[str, Any]  # the same content as data: yaml.safe_load(yaml_text)
    warnings: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)  # variable -> what it is for


def import_old_config(model_config: Path, server_config: Path | None = None) -> ImportResult:
    """Read model_config.py (and server_config.py) without running them; build modelport.yaml."""
    sources = [Path(model_config)] + ([Path(server_config)] if server_config else [])
    for source in sources:
        if not source.is_file():
            raise ConfigError(f"{source} does not exist")
    try:
        model_values = read_python_config(sources[0])
        server_values = read_python_config(sources[1], model_values) if server_config else None
    except SyntaxError as error:
        raise ConfigError(f"{error.filename} line {error.lineno}: not valid Python "
                          f"({error.msg}); fix it before importing") from None
    conversion = convert(model_values, server_values)
    warnings = model_values.warnings + (server_values.warnings if server_values else [])
    warnings += conversion.warnings
    config_dict = {"server": conversion.server,
                   "models": [model.entry for model in conversion.models]}
    validate_imported(config_dict)
    yaml_text = render_yaml(conversion.server, conversion.models, sources,
                            conversion.env_vars, warnings)
    return ImportResult(yaml_text, config_dict, warnings, dict(conversion.env_vars))


def validate_imported(config_dict: dict[str, Any]) -> None:
    """Check the result with modelport's schema; `${VAR}` references count as set.

    The variables are normally not exported yet when importing, so each reference is
    replaced by a placeholder in a copy instead of reading the environment.
    """
    placeholder = _with_placeholders(copy.deepcopy(config_dict))
    parse_config(placeholder, "imported config")


def _with_placeholders(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV_REFERENCE.sub("placeholder", value)
    if isinstance(value, dict):
        return {key: _with_placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_placeholders(item) for item in value]
    return value
