"""Reading a config: from a file, YAML text or parsed data, to a validated Config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelport.config.env import UnsetVariable, interpolate_env
from modelport.config.error_messages import describe_yaml_error, describe_validation_error
from modelport.config.top_level import Config
from modelport.config.vendors import resolve_vendors
from modelport.errors import ConfigError


def parse_config(data: Any, source: str = "config", base_dir: str | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `server` and `models`")
    # Three steps, each reading one thing: the environment (${VAR}s become values before
    # typed fields are checked), the file's own content (the schema), the vendors file.
    unset: list[UnsetVariable] = []
    data = interpolate_env(data, unset)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        # A field that fails because its variable is unset is explained by both lines.
        extra = "".join(f"\n  {u.message()}" for u in unset)
        raise ConfigError(describe_validation_error(error, data, source) + extra) from None
    resolve_vendors(config.models, config.vendors, source)
    config.base_dir = base_dir if base_dir is not None else os.getcwd()
    config._unset = unset
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    return config_from_text(read_config_text(path), path)


def read_config_text(path: str | os.PathLike[str]) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    return file.read_text(encoding="utf-8")


def config_from_text(text: str, path: str | os.PathLike[str]) -> Config:
    """The config in `text`, as if read from the file at `path` (its relative paths
    resolve against that file's folder)."""
    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(describe_yaml_error(file, error)) from None
    config = parse_config(data, str(file), base_dir=str(file.resolve().parent))
    config.source_file = str(file.resolve())
    return config
