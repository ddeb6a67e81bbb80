"""The whole config file: server, models and vendors, and the checks across models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from modelport.config.base import _Strict
from modelport.config.env import UnsetVariable
from modelport.config.model_kinds import ModelConfig
from modelport.config.server import ServerConfig
from modelport.config.upstream_models import VendorSpec
from modelport.errors import ConfigError


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    vendors: dict[str, VendorSpec] = Field(
        default_factory=dict,
        description="Online APIs added (or built-in ones overridden) without code; "
        "models name them with `vendor:`.",
    )
    # Folder the config came from (set by whoever reads it); relative models_dir is
    # resolved against it.
    base_dir: str = Field("", exclude=True)
    # The file it was read from (None: the built-in config); the default database follows it.
    source_file: str | None = Field(None, exclude=True)
    # ${VAR}s that were not set when the file was read. They stay in their fields as
    # written; only the ones a started model (or the server) uses are start-up errors.
    _unset: list["UnsetVariable"] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> "Config":
        seen: dict[str, str] = {}
        for model in self.models:
            for label in [model.name, *model.aliases]:
                if label in seen:
                    raise ValueError(
                        f"model name or alias '{label}' is used by both '{seen[label]}' "
                        f"and '{model.name}'; every name and alias must be unique"
                    )
                seen[label] = model.name
        return self

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> "Config":
        labels = {label for m in self.models for label in [m.name, *m.aliases]}
        for model in self.models:
            for target in getattr(model, "fallbacks", ()):
                if target not in labels:
                    raise ValueError(
                        f"model '{model.name}' falls back to '{target}', which is not a "
                        "configured model name or alias"
                    )
                if target == model.name or target in model.aliases:
                    raise ValueError(f"model '{model.name}' lists itself in its fallbacks")
        return self

    def unset_variables(self, models: list[Any]) -> tuple[list[str], list[str]]:
        """(problems, notes): unset variables that `models` or the server need, and the
        ones only other models (or unused vendors) need."""
        used_vendors = {getattr(m, "vendor", None) for m in models}
        problems, notes = [], []
        for unset in self._unset:
            section, key = unset.loc[0], unset.loc[1] if len(unset.loc) > 1 else None
            if section == "models" and isinstance(key, int) and key < len(self.models):
                needed = self.models[key] in models
            elif section == "vendors":
                needed = key in used_vendors
            else:
                needed = True
            (problems if needed else notes).append(unset.message())
        return problems, notes

    def models_dir_path(self) -> Path:
        path = Path(os.path.expanduser(self.server.models_dir))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name or name in model.aliases:
                return model
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"no model named '{name}' in the config (configured: {known})")
