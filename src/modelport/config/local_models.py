"""Models served by a worker process of ours: one class per local engine."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelport.config.base import MaskedKey
from modelport.config.model_base import _ModelBase


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
    worker_key: str | None = Field(
        None, description="Bearer key the worker accepts from other clients, normally "
        "'${ENV_VAR}'; required when `host` is not a loopback address (the gateway "
        "itself uses a random per-start secret). Gateways also send it to the model's "
        "registered remote workers.",
    )
    stall_timeout_s: float | None = Field(
        None, gt=0, description="This model's server.worker_stall_timeout_s: how long a "
        "started stream may get no bytes (and a worker of ours may miss its health checks) "
        "before its replica counts as stuck. The wait for the first token is not counted.",
    )
    replicas: int = Field(
        1, ge=0, le=64, description="Workers started for this model, each on its own port "
        "(`port`, when set, is the first of consecutive ports). 0: served only by its "
        "`deployments` and registered remote workers.",
    )

    @model_validator(mode="after")
    def _gpus_per_replica(self) -> "_LocalWorkerModel":
        gpus = getattr(self, "gpus", None)
        if isinstance(gpus, list) and len(gpus) != self.replicas:
            raise ValueError(f"gpus lists {len(gpus)} entries but replicas is {self.replicas}: "
                             "give one entry per replica, or one string shared by all")
        return self

    def replica_gpus(self, index: int) -> str | None:
        """The GPU ids replica `index` sees (a list gives each replica its own)."""
        gpus = getattr(self, "gpus", None)
        return gpus[index] if isinstance(gpus, list) else gpus

    @field_validator("worker_key", mode="after")
    @classmethod
    def _masked_worker_key(cls, key: str | None) -> "MaskedKey | None":
        if key is not None and not key.strip():
            raise ValueError("the worker key is empty; remove it or set its ${ENV} variable")
        return None if key is None else MaskedKey(key)


CHAT_TEMPLATE_HELP = (
    "Chat template overriding the model's own: a built-in name (chatml-tools, gemma-tools: "
    "they let a model call tools), a file path, or Jinja text. llama.cpp also takes its own "
    "template names (chatml, llama3, ...)."
)


class LlamaCppModel(_LocalWorkerModel):
    engine: Literal["llamacpp"]
    context_length: int = Field(4096, ge=64, description="Tokens of context per request.")
    parallel: int = Field(
        4, ge=1, le=256, description="Slots decoded together (continuous batching)."
    )
    lane_slots: int = Field(
        0, ge=0, le=16, description="Slots the engine runs beyond `parallel`, open only to "
        "requests that may take a reserved slot (a class above standard, a key below its "
        "fair share): a person's first token does not wait for a script's request to end. "
        "Costs these slots' KV cache, not throughput while unused (docs/scheduling.md)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (when omitted: one per "
                                "physical core this process may use; see `modelport check`).")
    gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all).")
    chat_template: str | None = Field(None, description=CHAT_TEMPLATE_HELP)
    reranking: bool = Field(
        False, description="Serve /v1/rerank with a GGUF reranker (a cross-encoder such as "
        "bge-reranker, scored by llama.cpp's rank pooling) instead of chat and completions; "
        "context_length is then the longest (query, document) pair."
    )
    prompt_cache_mib: int = Field(
        512, ge=0, description="Host memory for llama.cpp's cache of earlier prompts (MiB; 0 "
        "turns it off). llama.cpp's own default, 8 GiB, let one worker grow by 1 GB in a "
        "30-minute soak."
    )

    @property
    def engine_slots(self) -> int:
        """Slots llama.cpp decodes together: the open ones and the lane's."""
        return self.parallel + self.lane_slots


class SentenceTransformersModel(_LocalWorkerModel):
    engine: Literal["sentence-transformers"]
    batch_size: int = Field(32, ge=1, description="Texts encoded per forward pass.")
    max_input_tokens: int | None = Field(
        None, ge=1, description="Longest input accepted (the model's limit when omitted)."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per forward pass (default: one per CPU this "
        "process may use; fewer when the machine is busy with other work)."
    )


class CrossEncoderModel(_LocalWorkerModel):
    """A reranker: a sentence-transformers CrossEncoder (bge-reranker, ms-marco MiniLM)
    that scores (query, document) pairs for /v1/rerank."""

    engine: Literal["cross-encoder"]
    batch_size: int = Field(32, ge=1, description="Pairs scored per forward pass.")
    max_input_tokens: int | None = Field(
        None, ge=8, description="Longest (query, document) pair in tokens (the model's limit "
        "when omitted); a longer pair is cut to fit, longest text first, as "
        "sentence-transformers does.",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per forward pass (default: one per CPU this process "
        "may use).",
    )


class TransformersModel(_LocalWorkerModel):
    engine: Literal["transformers"]
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    gpus: str | list[str] | None = Field(
        None, description="Visible GPU ids, e.g. '0,1'; a list gives each replica its own "
        "(['0', '1'] with replicas: 2).")
    max_gpu_memory: str | None = Field(None, description="Per-GPU memory cap, e.g. '20GiB'.")
    cpu_offloading: bool = False
    load_8bit: bool = False
    load_4bit: bool = False
    cpu_int8: bool = Field(False, description="Dynamic int8 quantization on CPU.")
    chat_template: str | None = Field(None, description=CHAT_TEMPLATE_HELP)
    trust_remote_code: bool = False
    allow_download: bool = Field(False, description="Allow fetching a hub id over the network.")
    context_length: int | None = Field(None, ge=64)
    parallel: int = Field(4, ge=1, le=256)


class VllmModel(_LocalWorkerModel):
    engine: Literal["vllm"]
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs each layer is split over.")
    pipeline_parallel_size: int = Field(
        1, ge=1, description="Stages the layers are split into (usually one per node).")
    data_parallel_size: int = Field(
        1, ge=1, description="Copies of the model inside this one vLLM server.")
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None, description="How vLLM runs its GPU workers: mp (this machine) or ray (an "
        "existing Ray cluster, several machines); vLLM chooses when omitted.")
    gpus: str | list[str] | None = Field(
        None, description="Visible GPU ids, e.g. '0,1' (CUDA_VISIBLE_DEVICES of the worker); "
        "a list gives each replica its own (['0,1', '2,3'] with replicas: 2).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=64)
    quantization: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    extra_args: list[str] = Field(default_factory=list)

    @property
    def gpus_needed(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    @model_validator(mode="after")
    def _enough_gpus(self) -> "VllmModel":
        # With Ray the GPUs may be on other machines: vLLM checks the cluster itself.
        entries = self.gpus if isinstance(self.gpus, list) else [self.gpus]
        for gpus in entries:
            if not gpus or self.distributed_executor_backend == "ray":
                continue
            visible = [g for g in gpus.split(",") if g.strip()]
            if len(visible) < self.gpus_needed:
                raise ValueError(
                    f"gpus '{gpus}' names {len(visible)} GPU(s), but tensor_parallel_size "
                    f"x pipeline_parallel_size x data_parallel_size needs {self.gpus_needed} "
                    "on this machine (use distributed_executor_backend: ray for several)")
        return self


class EchoModel(_LocalWorkerModel):
    """A test engine without weights: answers with the last user message, word by word,
    and embeds texts as deterministic hash vectors (engines/echo.py)."""

    engine: Literal["echo"]
    path: str = Field(".", description="Not read: the echo engine has no files.")
    dimensions: int = Field(16, ge=1, le=4096, description="Length of the hash vectors.")
    word_delay_s: float = Field(0.0, ge=0, le=10, description="Pause before each word.")


class AutoModel(_LocalWorkerModel):
    """A local model whose engine is chosen at start-up from the files and hardware."""

    engine: Literal["auto"]
    context_length: int | None = Field(None, ge=64)
    parallel: int = Field(4, ge=1, le=256)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to the chosen engine."
    )


# Every local engine's config class, in the order they are defined here: the model kinds
# of the config (config/model_kinds.py) are these and the online ones.
LOCAL_MODELS: tuple[type[_LocalWorkerModel], ...] = tuple(_LocalWorkerModel.__subclasses__())
