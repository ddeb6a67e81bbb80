"""The one typed configuration model: YAML schema, validation and ${ENV} interpolation.

Every other part of modelport (CLI flags, `modelport check`, the workers) reads these
models; nothing else defines configuration fields.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import yaml
from pydantic_core import InitErrorDetails
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

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
    health_check_interval_s: float = Field(
        5.0, gt=0, description="How often a ready worker's /health is probed; a worker that "
        "fails two probes in a row is taken out of rotation (503) until it answers again."
    )
    worker_stall_timeout_s: float = Field(
        30.0, gt=0, description="A worker of ours that has not answered a health probe for "
        "this long (hung, stopped, swapping) is killed and restarted; its requests then end "
        "with an error instead of hanging. Also: a replica of a local model whose started "
        "streams all got no bytes for this long is stuck (taken out of rotation, its "
        "requests ended, restarted if ours); a model's `stall_timeout_s` overrides it."
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM or Ctrl-C, seconds requests in flight may take to "
        "finish before they are ended with an error (streams get an error event and [DONE])."
    )
    master_key: str | None = Field(
        None, description="Bearer key of the admin API (/admin: virtual keys, usage), "
        "normally '${MODELPORT_MASTER_KEY}'; without it /admin is off. `serve --master-key` "
        "and the MODELPORT_MASTER_KEY variable set it too.",
    )
    database_url: str | None = Field(
        None, description="Where keys and usage are stored: a postgresql:// URL (several "
        "gateways may share it), or sqlite:///PATH; default: modelport.db in data_dir.",
    )
    data_dir: str | None = Field(
        None, description="Folder of the embedded database (relative to the config file's "
        "folder); default: $MODELPORT_DATA_DIR, else ~/.local/share/modelport.",
    )
    redis_url: str | None = Field(
        None, description="A redis:// URL: virtual keys' rpm/tpm/parallel/budget counters are "
        "shared there by every gateway using it; without it each gateway counts alone.",
    )
    processes: int = Field(
        1, ge=1, strict=True, description="Gateway processes sharing server.port on this "
        "machine (SO_REUSEPORT), for hosts with many cores: the first starts and watches the "
        "workers, the others relay to them. With virtual keys (a master key) and more than "
        "one, key limits need server.redis_url.",
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    usage: bool = Field(True, description="Write one usage row per model request to the "
                        "database (tokens, latency, key, cost).")
    metrics_auth: bool = Field(
        False, description="Put /metrics behind the master key (open by default, as scrapers "
        "expect).",
    )
    load_timeout_s: float = Field(
        120.0, gt=0, description="How long a request to an unloaded on-demand model waits for "
        "it to load before it is answered 503 with Retry-After (the load goes on).",
    )
    idle_unload_s: float | None = Field(
        None, gt=0, description="Default for on-demand models: stop a worker after this many "
        "seconds without requests (none: keep it loaded until evicted).",
    )
    max_loaded: int | None = Field(
        None, ge=1, description="Most local models with a running worker at once; loading one "
        "more unloads the least recently used idle on-demand model.",
    )
    memory_budget: ByteSize | None = Field(
        None, description="Most bytes of model files loaded at once (e.g. 8GiB); loading one "
        "more unloads least recently used idle on-demand models until it fits.",
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not key.strip():
                raise ValueError("an API key is empty; remove it or set its ${ENV} variable")
        return keys

    @field_validator("master_key", "database_url", "redis_url", mode="after")
    @classmethod
    def _masked_secret(cls, value: str | None) -> "MaskedKey | None":
        # A database URL may carry a password: it is a secret like the master key.
        if value is not None and not value.strip():
            raise ValueError("the value is empty; remove it or set its ${ENV} variable")
        return None if value is None else MaskedKey(value)

    @field_validator("database_url", mode="after")
    @classmethod
    def _known_database(cls, url: "MaskedKey | None") -> "MaskedKey | None":
        scheme = r"^(postgres(ql)?(\+asyncpg)?|sqlite(\+aiosqlite)?)://"
        if url is not None and not re.match(scheme, url):
            raise ValueError("must be a postgresql://user:password@host/db or sqlite:///path URL")
        return url

    @field_validator("redis_url", mode="after")
    @classmethod
    def _known_redis(cls, url: "MaskedKey | None") -> "MaskedKey | None":
        if url is not None and not re.match(r"^(redis|rediss|unix)://", url):
            raise ValueError("must be a redis://[:password@]host:port/db URL")
        return url


class Price(_Strict):
    """A model's price per million tokens, in whatever currency the team counts in."""

    input: float = Field(ge=0, description="Per million prompt tokens.")
    output: float = Field(ge=0, description="Per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class DeploymentEntry(_Strict):
    """A further place serving the same model: another machine's worker or any
    OpenAI-compatible server, as one more replica of the model."""

    url: str = Field(description="Its OpenAI base URL, e.g. http://10.0.0.5:8001/v1.")
    api_key: str | None = Field(
        None, description="Bearer key it expects, normally '${ENV_VAR}' (a remote worker's "
        "worker_key).",
    )
    weight: float = Field(1.0, ge=0, description="Its share of requests (strategy: weighted).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must start with http:// or https://, e.g. http://10.0.0.5:8001/v1")
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    @field_validator("api_key", mode="after")
    @classmethod
    def _masked(cls, key: str | None) -> "MaskedKey | None":
        return None if key is None else MaskedKey(key)

    @property
    def api_key_value(self) -> str | None:
        return None if self.api_key is None else str.__str__(self.api_key)


class _ModelBase(_Strict):
    name: str = Field(pattern=_MODEL_NAME_PATTERN, description="The `model` clients send.")
    aliases: list[str] = Field(default_factory=list, description="Other accepted names.")
    autostart: bool = Field(
        True, description="Older form of `load`: true is load: always; false (without "
        "`load`) serves the model only when named with `serve --model NAME`."
    )
    load: Literal["always", "on_demand"] | None = Field(
        None, description="always: the worker starts with the server; on_demand: the first "
        "request that names the model starts it (default: always, or not served when "
        "autostart is false).",
    )
    idle_unload_s: float | None = Field(
        None, gt=0, description="On-demand models: stop the worker after this many seconds "
        "without requests (default: server.idle_unload_s).",
    )
    load_timeout_s: float | None = Field(
        None, gt=0, description="How long a request waits for this on-demand model to load "
        "(default: server.load_timeout_s).",
    )
    max_queue: int = Field(
        64, ge=0, description="Requests allowed to wait beyond the running ones before 429."
    )
    price: Price | None = Field(
        None, description="What a million tokens cost, for the cost column of usage.",
    )
    deployments: list[DeploymentEntry] = Field(
        default_factory=list, description="Further places serving this same model (other "
        "machines' workers, OpenAI-compatible servers), each one more replica of it.",
    )
    strategy: Literal["least_busy", "round_robin", "weighted", "prefix_affinity"] = Field(
        "least_busy", description="How a request picks among the model's replicas: fewest in "
        "flight for their capacity, in turn, by weight, or where its conversation's opening "
        "was served last (the engine's prompt cache answers it).",
    )
    affinity_margin: int = Field(
        2, ge=0, description="prefix_affinity: requests in flight a conversation's replica "
        "may have beyond the least busy one before the request goes elsewhere.",
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
    threads: int | None = Field(None, ge=1, description="CPU threads (all cores when omitted).")
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


class SentenceTransformersModel(_LocalWorkerModel):
    engine: Literal["sentence-transformers"]
    batch_size: int = Field(32, ge=1, description="Texts encoded per forward pass.")
    max_input_tokens: int | None = Field(
        None, ge=1, description="Longest input accepted (the model's limit when omitted)."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per forward pass (default: one per core; fewer "
        "when the machine is busy with other work)."
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
        None, ge=1, description="CPU threads per forward pass (default: one per core).",
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


class AutoModel(_LocalWorkerModel):
    """A local model whose engine is chosen at start-up from the files and hardware."""

    engine: Literal["auto"]
    context_length: int | None = Field(None, ge=64)
    parallel: int = Field(4, ge=1, le=256)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to the chosen engine."
    )


class MaskedKey(str):
    """An upstream key: sent and compared as the string it is, shown as *** in every repr
    (so a config or model printed into a log or an error never carries it)."""

    def __repr__(self) -> str:
        return "'***'"


class RetrySettings(_Strict):
    """How one model's upstream is retried before the gateway gives up on it (or falls back).

    Only failures that happen before the first byte reaches the client are retried, so a
    streamed answer is never sent twice.
    """

    attempts: int = Field(
        2, ge=1, le=10,
        description="Tries per request, the first one included (1 turns retries off).",
    )
    backoff: float = Field(
        0.5, ge=0, description="Seconds before the first retry; doubled for each further one.",
    )
    max_backoff: float = Field(8.0, ge=0, description="Longest wait between two tries.")
    max_retry_after: float = Field(
        10.0, ge=0,
        description="Longest upstream Retry-After that is waited out; a longer one is "
        "answered (or falls back) at once.",
    )


class CooldownSettings(_Strict):
    """When a model that keeps failing is skipped instead of being hammered."""

    failures: int = Field(
        3, ge=1, description="Consecutive failed requests that put the model in cool-down.",
    )
    seconds: float = Field(
        30.0, ge=0, description="How long a cooled-down model is skipped (0: never).",
    )


class VendorSpec(_Strict):
    """One online API: where it is, how the key is sent, and what it accepts.

    The built-in vendors live in modelport/providers/vendors.yaml; `vendors:` in
    modelport.yaml adds or overrides entries with the same fields.
    """

    label: str = Field("", description="Human-readable vendor name.")
    base_url: str = Field(
        description="API base URL. May hold {placeholders}: {model} is the vendor's model "
        "id, the others come from the model's `url_params` (or this vendor's).",
    )
    docs: str | None = Field(None, description="Where the vendor documents this API.")
    adapter: Literal["openai", "anthropic"] = Field(
        "openai", description="Wire format: openai (passed through) or anthropic (translated).",
    )
    auth: Literal["bearer", "header", "query", "none"] = Field(
        "bearer", description="How the key is sent: Authorization: Bearer, a named header "
        "(auth_name), a query parameter (auth_name), or not at all.",
    )
    auth_name: str | None = Field(None, description="Header or query parameter of the key.")
    key_env: str | None = Field(None, description="Environment variable read for the key.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request.")
    query: dict[str, str] = Field(
        default_factory=dict, description="Added to every URL (may hold {placeholders}).",
    )
    url_params: dict[str, str] = Field(
        default_factory=dict, description="Default values of the URL placeholders.",
    )
    streaming: bool = Field(True, description="Accepts stream: true.")
    embeddings: bool = Field(False, description="Serves /embeddings.")
    tools: bool = Field(True, description="Accepts tools (function calling).")
    completions: bool = Field(False, description="Serves the legacy /completions.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Request fields the vendor calls something else.",
    )
    drop: list[str] = Field(
        default_factory=list, description="Request fields the vendor rejects; removed.",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Numeric fields clamped into the vendor's [min, max].",
    )
    max_tokens_limit: int | None = Field(
        None, ge=1, description="Largest max_tokens accepted; larger requests are capped.",
    )
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens sent when the client gives none (APIs that need one).",
    )
    error_code_field: str | None = Field(
        None, description="Dotted path of a status code in a 200 body; non-zero means error.",
    )
    error_message_field: str | None = Field(
        None, description="Dotted path of the message that goes with error_code_field.",
    )

    @model_validator(mode="after")
    def _auth_named(self) -> "VendorSpec":
        if self.auth in ("header", "query") and not self.auth_name:
            raise ValueError(f"auth '{self.auth}' needs auth_name (the header or parameter name)")
        return self


class OpenAIUpstreamModel(_ModelBase):
    """A model answered by an online API from inside the gateway (no local worker)."""

    engine: Literal["openai"]
    vendor: str | None = Field(
        None, description="A vendor from the vendors file or `vendors:` (e.g. deepseek); "
        "gives the base URL, the key variable and the vendor's quirks.",
    )
    base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible API, ending in /v1 "
        "(required without `vendor`; overrides the vendor's).",
    )
    url_params: dict[str, str] = Field(
        default_factory=dict, description="Values of the vendor URL's {placeholders}, "
        "e.g. {resource: my-azure-resource}.",
    )
    api_key: str | None = Field(
        None, description="Upstream key, normally '${ENV_VAR}' (default: the vendor's key_env).",
    )
    upstream_model: str | None = Field(
        None, description="Model id sent upstream (defaults to `name`).",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(
        600.0, gt=0, description="Seconds the upstream may stay silent before 504.",
    )
    max_concurrency: int = Field(256, ge=1, description="Requests in flight upstream.")
    proxy: str | None = Field(
        None, description="http://, https:// or socks5:// proxy for this upstream "
        "(the old openai_proxy).",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models tried in order when this one fails or is rate-limited.",
    )
    retries: RetrySettings = Field(default_factory=RetrySettings)
    cooldown: CooldownSettings = Field(default_factory=CooldownSettings)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        return url.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^(https?|socks[45]h?)://", url):
            raise ValueError("must start with http://, https://, socks5:// or socks4://")
        return url

    @model_validator(mode="before")
    @classmethod
    def _where_to_send(cls, data: Any) -> Any:
        if (isinstance(data, dict) and data.get("engine") == "openai"
                and data.get("base_url") is None and data.get("vendor") is None):
            # Reported as the missing `base_url` field (not a model-level error), so the
            # message names the field to write, as for any other required field.
            raise ValidationError.from_exception_data(
                cls.__name__, [InitErrorDetails(type="missing", loc=("base_url",), input=data)])
        return data

    @field_validator("api_key", mode="after")
    @classmethod
    def _masked(cls, key: str | None) -> MaskedKey | None:
        return None if key is None else MaskedKey(key)

    @property
    def api_key_value(self) -> str | None:
        return None if self.api_key is None else str.__str__(self.api_key)


class PluginModel(OpenAIUpstreamModel):
    """A model answered by a provider class (a plugin) running inside the gateway.

    It shares the online-model fields (key, timeouts, retries, fallbacks); `base_url`
    and `api_key` are handed to the plugin, which may ignore them.
    """

    engine: Literal["plugin"]  # type: ignore[assignment]
    provider: str = Field(
        description="'package.module:ClassName', or a name from the `modelport.providers` "
        "entry-point group.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Plugin-specific settings passed to the class.",
    )

    @model_validator(mode="after")
    def _no_vendor(self) -> "PluginModel":
        if self.vendor is not None:
            raise ValueError("`vendor` is for engine: openai; a plugin reaches its API itself")
        return self


ModelConfig = Annotated[
    Union[
        LlamaCppModel,
        SentenceTransformersModel,
        CrossEncoderModel,
        TransformersModel,
        VllmModel,
        AutoModel,
        OpenAIUpstreamModel,
        PluginModel,
    ],
    Field(discriminator="engine"),
]
LOCAL_ENGINES = ("llamacpp", "sentence-transformers", "cross-encoder", "transformers", "vllm",
                 "auto")
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


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    vendors: dict[str, VendorSpec] = Field(
        default_factory=dict,
        description="Online APIs added (or built-in ones overridden) without code; "
        "models name them with `vendor:`.",
    )
    # Folder the config came from; relative models_dir is resolved against it.
    base_dir: str = Field(default_factory=os.getcwd, exclude=True)
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

    @model_validator(mode="after")
    def _vendors_resolved(self) -> "Config":
        """Fill each vendor model's base URL and key from its vendor entry, so that every
        later reader (the gateway, `modelport check`) sees where requests really go."""
        from modelport.providers.catalog import apply_vendor  # the catalog imports this module

        for model in self.models:
            if isinstance(model, OpenAIUpstreamModel) and model.vendor is not None:
                apply_vendor(model, self.vendors)
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


class UnsetVariable(NamedTuple):
    loc: tuple[str | int, ...]  # where the reference is, e.g. ("models", 3, "api_key")
    var: str

    def message(self) -> str:
        where = ".".join(str(part) for part in self.loc) or "config"
        return (f"{where}: environment variable {self.var} is not set; export "
                f"{self.var}=... before starting, or write ${{{self.var}:-default}}")


def interpolate_env(value: Any, unset: list[UnsetVariable] | None = None,
                    loc: tuple[str | int, ...] = ()) -> Any:
    """Replace ${VAR} (or ${VAR:-default}) in every string.

    An unset VAR is a ConfigError, unless `unset` is given: then the reference is left as
    written and recorded there, so that only the models that start need their secrets.
    """
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            if unset is None:
                raise ConfigError(UnsetVariable(loc, var).message())
            unset.append(UnsetVariable(loc, var))
            return match.group(0)

        return _ENV_PATTERN.sub(replace, value)
    if isinstance(value, dict):
        return {k: interpolate_env(v, unset, (*loc, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, unset, (*loc, i)) for i, v in enumerate(value)]
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
        for cls in (LlamaCppModel, SentenceTransformersModel, CrossEncoderModel,
                    TransformersModel, VllmModel, AutoModel, OpenAIUpstreamModel, PluginModel):
            if cls.model_fields["engine"].annotation.__args__[0] == engine:  # type: ignore[union-attr]
                return list(cls.model_fields)
    if len(loc) == 1:
        return ["server", "models", "vendors"]
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
                "`engine` must be one of: llamacpp, sentence-transformers, cross-encoder, "
                "transformers, vllm, auto, openai, plugin"
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
    unset: list[UnsetVariable] = []
    data = interpolate_env(data, unset)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        # A field that fails because its variable is unset is explained by both lines.
        extra = "".join(f"\n  {u.message()}" for u in unset)
        raise ConfigError(describe_validation_error(error, data, source) + extra) from None
    if base_dir is not None:
        config.base_dir = base_dir
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
        raise ConfigError(_describe_yaml_error(file, error)) from None
    return parse_config(data, str(file), base_dir=str(file.resolve().parent))


def _describe_yaml_error(file: Path, error: yaml.YAMLError) -> str:
    # PyYAML names the source "<unicode string>" and counts from 0; say file:line:column
    # the way editors jump to it, then the parser's own explanation with its snippet.
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
    detail = str(error).replace('"<unicode string>"', f'"{file}"')
    return f"{where}: not valid YAML: {detail}"
