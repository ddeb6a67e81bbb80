"""The `server:` section: where the gateway listens, its keys, stores and limits."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Literal

from pydantic import ByteSize, Field, field_validator

from modelport.config.base import MaskedKey, _Strict
from modelport.config.cpus import usable_cpus
from modelport.config.devices import check_memory_budget


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
        10.0, gt=0, description="A replica of a local model is stuck when its started "
        "streams all got no bytes for this long, or, for a worker of ours, when it has "
        "neither answered a health probe nor sent any stream bytes for this long (hung, "
        "stopped, swapping; never less than two health-check intervals). A stuck replica "
        "is taken out of rotation at once: its streams end with a `replica_stalled` error "
        "event, its requests waiting for an answer go to another replica (or get 503), and "
        "a worker of ours is killed and restarted. A model's `stall_timeout_s` overrides it."
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
    limits_on_outage: Literal["local", "deny"] = Field(
        "local", description="While server.redis_url is unreachable: `local` counts key "
        "limits in each process (each limit divided by the gateways last seen), `deny` "
        "refuses requests of keys with limits (503 with Retry-After).",
    )
    processes: Annotated[int, Field(ge=1, strict=True)] | Literal["auto"] = Field(
        1, description="Gateway processes sharing server.port on this "
        "machine (SO_REUSEPORT), for hosts with many cores: the first starts and watches the "
        "workers, the others relay to them. With virtual keys (a master key) and more than "
        "one, key limits need server.redis_url. `auto`: one per CPU this process may use "
        "(affinity and cgroup quota), or 1 where several could not serve (not Linux; virtual "
        "keys without server.redis_url).",
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
    memory_budget: ByteSize | dict[str, ByteSize] | None = Field(
        None, description="Most bytes of memory local models hold at once: one size (e.g. "
        "8GiB) for the CPU's memory, or one per device ({cpu: 8GiB, 'cuda:0': 70GiB}). A "
        "model counts on the device it runs on: its files (times the dtype it loads in over "
        "the files' own), plus a GGUF model's KV cache for context_length x parallel tokens, "
        "or a vLLM model's gpu_memory_utilization of its GPUs, or what its workers were "
        "measured holding when more; loading one more unloads idle on-demand models (never "
        "pin: true), least recently used and cheapest to reload first, until it fits.",
    )
    swap_max_wait_s: float | None = Field(
        None, ge=0, description="When loading a model needs room that only models with "
        "requests running or queued hold, serve those first for up to this many seconds, "
        "then unload them (their running requests finish, the queued ones wait for their "
        "next load); none: such a load is refused with 503 at once. Per model too.",
    )

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _known_devices(cls, value: object) -> object:
        return check_memory_budget(value)

    def memory_budgets(self) -> dict[str, int] | None:
        """The memory budget per device (one size is the CPU's), or None."""
        budget = self.memory_budget
        if budget is None:
            return None
        return {"cpu": int(budget)} if isinstance(budget, int) else {
            device: int(size) for device, size in budget.items()}

    def process_count(self) -> tuple[int, str]:
        """How many gateway processes serve, and why (`processes: auto` decides here)."""
        if self.processes != "auto":
            return self.processes, "server.processes"
        if not sys.platform.startswith("linux"):
            return 1, "processes: auto; sharing a port between processes needs Linux"
        if self.master_key and not self.redis_url:
            return 1, ("processes: auto; virtual keys without server.redis_url are counted "
                       "in one process")
        cpus = usable_cpus()
        return cpus.logical, f"processes: auto; one per usable CPU ({cpus.why})"

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
