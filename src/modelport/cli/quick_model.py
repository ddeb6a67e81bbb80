"""`serve --model LOCATION`: one model served from where it is, with no YAML, as
`vllm serve` does. A value that names a configured model keeps meaning that model.

Locations: a .gguf file or a checkpoint folder on disk, a Hugging Face id `org/repo`
(or `org/repo:file.gguf`), found in models_dir (where `modelport pull` puts it) or the
Hugging Face cache, else downloaded into models_dir; a ModelScope id
`modelscope:org/repo[:file]`, which must be in the ModelScope cache already.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelport.cli.pull import PullError, model_name, pull, validate_repo_id
from modelport.config import Config, ModelConfig, parse_config
from modelport.config.locations import MODELSCOPE_PREFIX, modelscope_id, resolve_location
from modelport.errors import ConfigError


def add_located_models(config: Config, values: list[str], download: bool = True) -> list[str]:
    """The model names `serve --model` selects: configured names as they are; each value
    that is a location instead becomes a model of its own, added to `config`. Without
    `download` (`check`), a Hugging Face id not downloaded yet is a ConfigError."""
    labels = {label for model in config.models for label in [model.name, *model.aliases]}
    names = []
    for value in values:
        if value in labels:
            names.append(value)
            continue
        entry = located_entry(value, config.models_dir_path(), download)
        if entry is None:
            names.append(value)  # neither: select_models says which names exist
            continue
        if entry["name"] in labels:
            raise ConfigError(f"--model {value}: the name '{entry['name']}' is a configured "
                              "model's; give the file or folder another name")
        model = _parsed(entry, config.base_dir)
        config.models.append(model)
        labels.add(model.name)
        names.append(model.name)
    return names


def located_entry(value: str, models_dir: Path, download: bool = True) -> dict | None:
    """A config entry for the model at `value`, or None when `value` is no location."""
    if value.startswith(MODELSCOPE_PREFIX):
        repo_id, filename = modelscope_id(value)
        resolve_location(value, models_dir, value)  # not downloaded yet: say so now
        return _entry(model_name(repo_id, filename), value)
    local = Path(os.path.expanduser(value))
    if local.exists():
        return _entry(local.stem if local.is_file() else local.name, str(local.resolve()))
    repo_id, _, filename = value.partition(":")
    try:
        validate_repo_id(repo_id)
    except PullError:
        return None
    return _entry(model_name(repo_id, filename or None),
                  str(_hugging_face_copy(repo_id, filename or None, models_dir, download)))


def _entry(name: str, path: str) -> dict:
    return {"name": name, "engine": "auto", "path": path}


def _parsed(entry: dict, base_dir: str) -> ModelConfig:
    return parse_config({"models": [entry]}, f"--model {entry['path']}",
                        base_dir=base_dir).models[0]


def _hugging_face_copy(repo_id: str, filename: str | None, models_dir: Path,
                       download: bool) -> Path:
    """models_dir/org/repo[/file] (what `modelport pull` writes), else the Hugging Face
    cache's copy, else a download into models_dir (a PullError where there is no hub)."""
    pulled = models_dir / repo_id / filename if filename else models_dir / repo_id
    if pulled.exists():
        return pulled
    cached = _hugging_face_cache(repo_id, filename)
    if cached is not None:
        return cached
    if not download:
        wanted = f"{repo_id}:{filename}" if filename else repo_id
        raise ConfigError(f"--model {wanted}: not downloaded yet (neither in {pulled} nor in "
                          "the Hugging Face cache); `serve` would download it, or run "
                          f"`modelport pull {repo_id}{' --file ' + filename if filename else ''}`")
    return pull(repo_id, models_dir, filename=filename)


def _hugging_face_cache(repo_id: str, filename: str | None) -> Path | None:
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache
    except ImportError:
        return None
    if filename:
        found = try_to_load_from_cache(repo_id, filename)
        return Path(found) if isinstance(found, str) else None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and kin)
        return None
