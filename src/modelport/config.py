"""The one typed configuration model: YAML schema, validation and ${ENV} interpolation.

Every other part of modelport (CLI flags, `modelport check`, the workers) reads these
models; nothing else defines configuration fields.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelport.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address the gateway binds.")
    port: int = Field(8888, ge=1, le=65535, description="Port of the OpenAI-compatible gateway.")
    models_dir: str = Field(
        "llm_models",
        description="Folder that relative model paths are resolved against "
        "(itself relative to the config file's folder).",
    )
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer keys accepted on /v1 routes; empty means no authentication.",
    )
    allow_public_bind: bool = Field(
        False, description="Allow binding a non-loopback host without api_keys."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above it)."
    )
    log_prompts: bool = Field(False, description="Log request bodies (debug only).")
    worker_start_timeout: float = Field(
        300.0, gt=0, description="Seconds a worker may take to load its model."
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not key.strip():
                raise ValueError("an API key is empty; remove it or set its ${ENV} variable")
        return keys


class _ModelBase(_Strict):
    name: str = Field(pattern=_MODEL_NAME_PATTERN, description="The `model` clients send.")
    aliases: list[str] = Field(default_factory=list, description="Other accepted names.")
    autostart: bool = Field(
        True, description="Start with `modelport serve` (otherwise only with --model NAME)."
    )
    max_queue: int = Field(
        64, ge=0, description="Requests allowed to wait beyond the running ones before 429."
    )


class _LocalWorkerModel(_ModelBase):
    path: str = Field(
        description="Model location: relative to models_dir, ~/..., absolute, "
        "or pkg:PACKAGE/FILE inside an installed Python package."
    )
    host: str = Field("127.0.0.1", description="Address the model's worker binds.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Worker port (a free one when omitted)."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Compute device.")


class LlamaCppModel(_LocalWorkerModel):
    engine: Literal["llamacpp"]
    context_length: int = Field(4096, ge=64, description="Tokens of context per request.")
    parallel: int = Field(
        4, ge=1, le=256, description="Slots decoded together (continuous batching)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (all cores when omitted).")
    gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all).")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the model's own."
    )


class SentenceTransformersModel(_LocalWorkerModel):
    engine: Literal["sentence-transformers"]
    batch_size: int = Field(32, ge=1, description="Texts encoded per forward pass.")
    max_input_tokens: int | None = Field(
        None, ge=1, description="Longest input accepted (the model's limit when omitted)."
    )


class TransformersModel(_LocalWorkerModel):
    engine: Literal["transformers"]
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    gpus: str | None = Field(None, description="Visible GPU ids, e.g. '0,1'.")
    max_gpu_memory: str | None = Field(None, description="Per-GPU memory cap, e.g. '20GiB'.")
    cpu_offloading: bool = False
    load_8bit: bool = False
    load_4bit: bool = False
    cpu_int8: bool = Field(False, description="Dynamic int8 quantization on CPU.")
    chat_template: str | None = None
    trust_remote_code: bool = False
    allow_download: bool = Field(False, description="Allow fetching a hub id over the network.")
    context_length: int | None = Field(None, ge=64)
    parallel: int = Field(4, ge=1, le=256)


class VllmModel(_LocalWorkerModel):
    engine: Literal["vllm"]
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=64)
    quantization: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    extra_args: list[str] = Field(default_factory=list)


class AutoModel(_LocalWorkerModel):
    """A local model whose engine is chosen at start-up from the files and hardware."""

    engine: Literal["auto"]
    context_length: int | None = Field(None, ge=64)
    parallel: int = Field(4, ge=1, le=256)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to the chosen engine."
    )


class OpenAIUpstreamModel(_ModelBase):
    engine: Literal["openai"]
    base_url: str = Field(description="Base URL of an OpenAI-compatible API, ending in /v1.")
    api_key: str | None = Field(None, description="Upstream key, normally '${ENV_VAR}'.")
    upstream_model: str | None = Field(
        None, description="Model id sent upstream (defaults to `name`)."
    )
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)
    max_concurrency: int = Field(256, ge=1, description="Requests in flight upstream.")
    proxy: str | None = Field(None, description="HTTP(S) proxy for this upstream.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        return url.rstrip("/")


ModelConfig = Annotated[
    Union[
        LlamaCppModel,
        SentenceTransformersModel,
        TransformersModel,
        VllmModel,
        AutoModel,
        OpenAIUpstreamModel,
    ],
    Field(discriminator="engine"),
]
LOCAL_ENGINES = ("llamacpp", "sentence-transformers", "transformers", "vllm", "auto")
EMBEDDING_ENGINES = ("sentence-transformers",)


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    # Folder the config came from; relative models_dir is resolved against it.
    base_dir: str = Field(default_factory=os.getcwd, exclude=True)

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

    def models_dir_path(self) -> Path:
        path = Path(os.path.expanduser(self.server.models_dir))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name or name in model.aliases:
                return model
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"no model named '{name}' in the config (configured: {known})")


def interpolate_env(value: Any, where: str = "") -> Any:
    """Replace ${VAR} (or ${VAR:-default}) in every string; an unset VAR is an error."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            raise ConfigError(
                f"{where or 'config'}: environment variable {var} is not set; "
                f"export {var}=... before starting, or write ${{{var}:-default}}"
            )

        return _ENV_PATTERN.sub(replace, value)
    if isinstance(value, dict):
        return {k: interpolate_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    return value


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
        for cls in (LlamaCppModel, SentenceTransformersModel, TransformersModel, VllmModel,
                    AutoModel, OpenAIUpstreamModel):
            if cls.model_fields["engine"].annotation.__args__[0] == engine:  # type: ignore[union-attr]
                return list(cls.model_fields)
    if len(loc) == 1:
        return ["server", "models"]
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
            message = (
                "`engine` must be one of: llamacpp, sentence-transformers, transformers, "
                "vllm, auto, openai"
            )
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"]
            if "input" in item and not isinstance(item["input"], (dict, list)):
                message += f" (got {item['input']!r})"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config", base_dir: str | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `server` and `models`")
    data = interpolate_env(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, data, source)) from None
    if base_dir is not None:
        config.base_dir = base_dir
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    return parse_config(data, str(file), base_dir=str(file.resolve().parent))
