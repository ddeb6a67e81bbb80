"""ModelConfig, every model kind told apart by `engine`, and what callers ask of a model."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import Field

from modelport.config.local_models import LOCAL_MODELS
from modelport.config.upstream_models import OpenAIUpstreamModel, PluginModel


# A new local engine's config class joins by being defined in local_models.py.
ModelConfig = Annotated[
    Union[(*LOCAL_MODELS, OpenAIUpstreamModel, PluginModel)],  # type: ignore[valid-type]
    Field(discriminator="engine"),
]
# Every model class, in the union's order (what a config error lists the fields of).
MODEL_KINDS: tuple[type, ...] = get_args(get_args(ModelConfig)[0])
ENGINE_NAMES: tuple[str, ...] = tuple(get_args(kind.model_fields["engine"].annotation)[0]
                                      for kind in MODEL_KINDS)
LOCAL_ENGINES = tuple(name for name in ENGINE_NAMES if name not in ("openai", "plugin"))
EMBEDDING_ENGINES = ("sentence-transformers",)


def load_policy(model: Any) -> str | None:
    """How a model is served: "always", "on_demand", or None (not served unless named)."""
    if model.load is not None:
        return model.load
    return "always" if model.autostart else None


# Fields that only the gateway reads: changing them on reload does not restart a worker.
GATEWAY_ONLY_FIELDS = frozenset({"aliases", "autostart", "load", "idle_unload_s",
                                 "load_timeout_s", "price", "fallbacks", "strategy",
                                 "affinity_margin", "stall_timeout_s"})


def serves_rerank_only(config: Any) -> bool:
    """A reranker (cross-encoder, or a llama.cpp model started for reranking): it answers
    /v1/rerank and nothing else."""
    if config.engine == "auto":  # a GGUF file chosen for llama.cpp takes its options
        return bool(config.options.get("reranking"))
    return config.engine == "cross-encoder" or bool(getattr(config, "reranking", False))
