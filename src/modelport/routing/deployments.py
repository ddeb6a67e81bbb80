"""Per-model serving state: where requests go, whether they may go, and how many are in flight."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from modelport.config import EMBEDDING_ENGINES, ModelConfig, OpenAIUpstreamModel, serves_rerank_only
from modelport.errors import ModelNotReadyError, RateLimitError
from modelport.reranking import CROSS_ENCODER, EMBEDDING_SIMILARITY, UPSTREAM
from modelport.routing.cooldown import Cooldown, never_cools
from modelport.routing.retry import NO_RETRIES, RetryPolicy


class DeploymentStatus(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    UNRESPONSIVE = "unresponsive"  # running, but not answering its health checks
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Capabilities:
    """What a model's upstream accepts, so that a request it cannot serve is a clear 400
    (or skips that model in a fallback list) instead of an upstream error."""

    chat: bool = True
    completions: bool = True
    embeddings: bool = False
    streaming: bool = True
    tools: bool = True
    # Why a model cannot call tools (named in the 400), or how it can.
    tools_note: str = ""
    # Non-text content parts: images, and likewise audio and files. On by default: an online
    # API or adapter judges such input itself.
    vision: bool = True
    # How the model scores documents for /v1/rerank (reranking.CROSS_ENCODER, ...), or
    # None when it serves no /v1/rerank.
    rerank: str | None = None

    @classmethod
    def for_config(cls, config: ModelConfig) -> "Capabilities":
        if serves_rerank_only(config):
            return cls(chat=False, completions=False, embeddings=False, streaming=False,
                       tools=False, vision=False, rerank=CROSS_ENCODER)
        if config.engine in EMBEDDING_ENGINES:
            return cls(chat=False, completions=False, embeddings=True, streaming=False,
                       tools=False, vision=False, rerank=EMBEDDING_SIMILARITY)
        if isinstance(config, OpenAIUpstreamModel):
            # A plain OpenAI-compatible API (vLLM, another gateway) may serve anything.
            return cls(embeddings=True, rerank=UPSTREAM)
        # vLLM answers a clear 400 itself when its model takes no images; our llama.cpp
        # and transformers workers load no image or audio encoder (llama.cpp answers 500).
        return cls(vision=config.engine == "vllm")


@dataclass
class Deployment:
    """One configured model as the gateway sees it.

    `base_url` is the OpenAI-compatible address requests are forwarded to: a worker on
    loopback or an online API. `limit` bounds requests in flight (running + queued);
    past it the gateway answers 429 at once instead of letting requests pile up.
    """

    config: ModelConfig
    base_url: str
    limit: int
    status: DeploymentStatus = DeploymentStatus.STARTING
    in_flight: int = 0
    detail: str = ""
    restarts: int = 0
    ready_since: float | None = None
    pid: int | None = None
    retry_after_s: int = 5
    # Derived from the config when not given (the gateway passes the provider's).
    capabilities: Capabilities = None  # type: ignore[assignment]
    retry: RetryPolicy = None  # type: ignore[assignment]
    cooldown: Cooldown = field(default=None, compare=False)  # type: ignore[assignment]
    # The deployments tried after this one, in order (filled in once all are built).
    fallbacks: tuple["Deployment", ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.capabilities is None:
            self.capabilities = Capabilities.for_config(self.config)
        if self.retry is None:
            self.retry = retry_policy(self.config)
        if self.cooldown is None:
            self.cooldown = cooldown_for(self.config)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def is_local(self) -> bool:
        """Served by a worker process of ours (not an online API or an in-gateway plugin)."""
        return not isinstance(self.config, OpenAIUpstreamModel)

    @property
    def is_embedding(self) -> bool:
        return self.config.engine in EMBEDDING_ENGINES

    @property
    def kind(self) -> str:
        """What the model is for: chat, embedding or rerank."""
        if serves_rerank_only(self.config):
            return "rerank"
        return "embedding" if self.is_embedding else "chat"

    @property
    def upstream_model(self) -> str:
        if isinstance(self.config, OpenAIUpstreamModel):
            return self.config.upstream_model or self.config.name
        return self.config.name

    def set_status(self, status: DeploymentStatus, detail: str = "") -> None:
        self.status = status
        self.detail = detail
        self.ready_since = time.monotonic() if status is DeploymentStatus.READY else None

    def acquire(self) -> None:
        """Take a place for one request, or refuse it with 503/429 right away."""
        if self.status is not DeploymentStatus.READY:
            why = f" ({self.detail})" if self.detail else ""
            raise ModelNotReadyError(
                f"model '{self.name}' is {self.status.value}{why}; retry shortly",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.in_flight >= self.limit:
            raise RateLimitError(
                f"model '{self.name}' has {self.in_flight} requests in flight, its limit; "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


def retry_policy(config: ModelConfig) -> RetryPolicy:
    if not isinstance(config, OpenAIUpstreamModel):
        return NO_RETRIES  # a local worker that fails is restarted by its supervisor
    settings = config.retries
    return RetryPolicy(settings.attempts, settings.backoff, settings.max_backoff,
                       settings.max_retry_after)


def cooldown_for(config: ModelConfig) -> Cooldown:
    if not isinstance(config, OpenAIUpstreamModel):
        return never_cools()
    return Cooldown(config.cooldown.failures, config.cooldown.seconds)


def request_limit(config: ModelConfig) -> int:
    """Running plus queued requests a model accepts before answering 429."""
    if isinstance(config, OpenAIUpstreamModel):
        return config.max_concurrency + config.max_queue
    running = getattr(config, "parallel", None) or getattr(config, "batch_size", None) or 1
    return running + config.max_queue
