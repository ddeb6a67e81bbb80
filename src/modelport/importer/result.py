"""What an import produces: the checked config, rendered as modelport.yaml text, and what
became of each old entry; or the error that nothing could be imported."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.importer.convert import Conversion
from modelport.importer.entries import ImportedModel, Skipped
from modelport.importer.render import render_yaml

_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_URL_FIELDS = {"base_url", "url", "proxy"}


class NothingToImport(ConfigError):
    """The files were read but no model came out of them."""


@dataclass
class ImportResult:
    yaml_text: str  # a complete modelport.yaml
    config_dict: dict[str, Any]  # the same content as data: yaml.safe_load(yaml_text)
    warnings: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)  # variable -> what it is for
    models: list[ImportedModel] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    how: str = ""  # how the files were read, in one sentence


def finish_import(conversion: Conversion, sources: list[Path], notes: list[str], how: str,
                  what: str | None = None) -> ImportResult:
    """Validate the converted config and render it as modelport.yaml text."""
    warnings = notes + conversion.warnings
    config_dict = {"server": conversion.server,
                   "models": [model.entry for model in conversion.models]}
    validate_imported(config_dict)
    yaml_text = render_yaml(conversion.server, conversion.models, sources,
                            conversion.env_vars, warnings, *([what] if what else []))
    return ImportResult(yaml_text, config_dict, warnings, dict(conversion.env_vars),
                        conversion.models, conversion.skipped, how)


def validate_imported(config_dict: dict[str, Any]) -> None:
    """Check the result with modelport's schema; `${VAR}` references count as set.

    The variables are normally not exported yet when importing, so each reference is
    replaced by a placeholder in a copy instead of reading the environment.
    """
    placeholder = _with_placeholders(copy.deepcopy(config_dict))
    parse_config(placeholder, "imported config")


def _with_placeholders(value: Any, key: Any = None) -> Any:
    if isinstance(value, str):
        # a URL field must still look like one: `base_url: ${API_BASE_URL}`
        stand_in = "http://placeholder" if key in _URL_FIELDS else "placeholder"
        return _ENV_REFERENCE.sub(stand_in, value)
    if isinstance(value, dict):
        return {name: _with_placeholders(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_with_placeholders(item) for item in value]
    return value
