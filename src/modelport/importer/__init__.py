"""`modelport import-config`: turn the old system's config into modelport.yaml.

The old service's `configs` package is run as the old service ran it (in a separate,
time-limited process, see execute.py); when that fails, its files are read without
running them (pysource.py). A LiteLLM `config.yaml` is read as YAML (litellm.py). The
result is checked against modelport's own config schema before it is returned, so what
is written always loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelport.errors import ConfigError
from modelport.importer.convert import MODEL_TABLES, READ_NAMES, Conversion, convert
from modelport.importer.execute import (
    DEFAULT_TIMEOUT_S,
    RunFailed,
    old_layout,
    restore_env_refs,
    run_old_config,
)
from modelport.importer.litellm import import_litellm, is_litellm_config
from modelport.importer.pysource import ModuleValues, read_python_config
from modelport.importer.result import (
    ImportResult,
    NothingToImport,
    finish_import,
    validate_imported,
)

__all__ = ["DEFAULT_TIMEOUT_S", "ImportResult", "NothingToImport", "finish_import",
           "import_config", "import_old_config", "validate_imported"]


def import_config(paths: list[Path], *, run: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
                  python: str | None = None) -> ImportResult:
    """Import whatever was given: a LiteLLM config.yaml, the old `configs` folder (or the
    project folder above it), or the old model_config.py [server_config.py]."""
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

