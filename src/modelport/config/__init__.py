"""The one typed configuration model: YAML schema, validation and ${ENV} interpolation.

Every other part of modelport (CLI flags, `modelport check`, the workers) reads these
models; nothing else defines configuration fields. The sections live in the modules of
this package; every name is importable from `modelport.config` itself.
"""

from __future__ import annotations

from modelport.config.base import MaskedKey
from modelport.config.env import UnsetVariable, interpolate_env
from modelport.config.error_messages import describe_validation_error
from modelport.config.loading import config_from_text, load_config, parse_config, read_config_text
from modelport.config.local_models import (
    CHAT_TEMPLATE_HELP,
    AutoModel,
    CrossEncoderModel,
    LlamaCppModel,
    SentenceTransformersModel,
    TransformersModel,
    VllmModel,
)
from modelport.config.model_base import DeploymentEntry, Price
from modelport.config.model_kinds import (
    EMBEDDING_ENGINES,
    GATEWAY_ONLY_FIELDS,
    LOCAL_ENGINES,
    ModelConfig,
    load_policy,
    serves_rerank_only,
)
from modelport.config.server import ServerConfig
from modelport.config.top_level import Config
from modelport.config.upstream_models import (
    CooldownSettings,
    OpenAIUpstreamModel,
    PluginModel,
    RetrySettings,
    VendorSpec,
)

__all__ = [
    "CHAT_TEMPLATE_HELP",
    "EMBEDDING_ENGINES",
    "GATEWAY_ONLY_FIELDS",
    "LOCAL_ENGINES",
    "AutoModel",
    "Config",
    "CooldownSettings",
    "CrossEncoderModel",
    "DeploymentEntry",
    "LlamaCppModel",
    "MaskedKey",
    "ModelConfig",
    "OpenAIUpstreamModel",
    "PluginModel",
    "Price",
    "RetrySettings",
    "SentenceTransformersModel",
    "ServerConfig",
    "TransformersModel",
    "UnsetVariable",
    "VendorSpec",
    "VllmModel",
    "config_from_text",
    "describe_validation_error",
    "interpolate_env",
    "load_config",
    "load_policy",
    "parse_config",
    "read_config_text",
    "serves_rerank_only",
]
