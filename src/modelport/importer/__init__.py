"""`modelport import-config`: turn the old system's config into modelport.yaml.

The old service's `configs` package is run as the old service ran it (in a separate,
time-limited process, see execute.py); when that fails, its files are read without
running them (pysource.py). A LiteLLM `config.yaml` is read as YAML (litellm.py). The
result is checked against modelport's own config schema before it is returned, so what
is written always loads.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.importer.convert import MODEL_TABLES, READ_NAMES, Conversion, convert
from modelport.importer.entries import ImportedModel, Skipped
from modelport.importer.execute import (
    DEFAULT_TIMEOUT_S,
    RunFailed,
    old_layout,
    restore_env_refs,
    run_old_config,
)
from modelport.importer.pysource import ModuleValues, read_python_config
from modelport.importer.render import render_yaml

__all__ = ["DEFAULT_TIMEOUT_S", "ImportResult", "NothingToImport", "finish_import",
           "import_config", "import_old_config", "validate_imported"]

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


def import_config(paths: list[Path], *, run: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
                  python: str | None = None) -> ImportResult:
    """Import whatever was given: a LiteLLM config.yaml, the old `configs` folder (or the
    project folder above it), or the old model_config.py [server_config.py]."""
    from modelport.importer.litellm import import_litellm, is_litellm_config

    if not paths:
        raise ConfigError("name the old config: configs/model_config.py "
                          "[configs/server_config.py], the configs folder, or a LiteLLM "
                          "config.yaml")
    if paths[0].is_file() and is_litellm_config(paths[0]):
        return import_litellm(paths[0])
    files = old_config_files(paths)
    return import_old_config(files[0], files[1] if len(files) > 1 else None, run=run,
                             timeout=timeout, python=python)


def old_config_files(paths: list[Path]) -> list[Path]:
    if len(paths) > 1 or not paths[0].is_dir():
        return paths
    folder = paths[0] / "configs" if (paths[0] / "configs").is_dir() else paths[0]
    files = [folder / "model_config.py", folder / "server_config.py"]
    if not files[0].is_file():
        raise ConfigError(f"{paths[0]} has no model_config.py (nor configs/model_config.py)")
    return [f for f in files if f.is_file()]


def import_old_config(model_config: Path, server_config: Path | None = None, *,
                      run: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
                      python: str | None = None) -> ImportResult:
    """Build modelport.yaml from model_config.py (and server_config.py): by running them
    when `run` is true and that works, else by reading them without running them."""
    sources = [Path(model_config)] + ([Path(server_config)] if server_config else [])
    for source in sources:
        if not source.is_file():
            raise ConfigError(f"{source} does not exist")
    read = _read_without_running(sources)
    notes: list[str] = []
    values, how = read, "read without running them"
    if run:
        layout = old_layout(sources)
        try:
            ran = run_old_config(layout, list(READ_NAMES), timeout, python)
        except RunFailed as failure:
            notes.append(f"running the old config failed ({failure.reason}); its files were "
                         "read without running them instead")
            how = f"read without running them, as running them failed: {failure.reason}"
        else:
            values = [ModuleValues(file=r.file, values=restore_env_refs(
                r.values, r_static.env_refs, dict(os.environ)))
                for r, r_static in zip(ran.modules, read)]
            notes += ran.notes
            how = f"ran {', '.join(layout.modules)} in {layout.root}"
    if values is read:
        notes += [warning for module in read for warning in module.warnings]
    conversion = convert(values[0], values[1] if len(values) > 1 else None)
    if not conversion.models:
        raise NothingToImport(_nothing_found(sources, how, values, conversion))
    return finish_import(conversion, sources, notes, how)


def _read_without_running(sources: list[Path]) -> list[ModuleValues]:
    try:
        model_values = read_python_config(sources[0])
        if len(sources) == 1:
            return [model_values]
        return [model_values, read_python_config(sources[1], model_values)]
    except SyntaxError as error:
        raise ConfigError(f"{error.filename} line {error.lineno}: not valid Python "
                          f"({error.msg}); fix it before importing") from None


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


def _nothing_found(sources: list[Path], how: str, values: list[ModuleValues],
                   conversion: Conversion) -> str:
    found = []
    for table in MODEL_TABLES:
        value = next((v.values[table] for v in values if table in v.values), None)
        if value is None:
            found.append(f"{table}: not set")
        else:
            size = len(value) if isinstance(value, (dict, list)) else 0
            found.append(f"{table}: {size} entr{'y' if size == 1 else 'ies'}")
    why = "; ".join(f"{s.origin}: {s.reason}" for s in conversion.skipped) or \
        "no entry in any of them"
    return (f"no model found in {', '.join(str(s) for s in sources)} ({how}). "
            f"Read: {'; '.join(found)}. Why nothing matched: {why}. Nothing was written.")


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
