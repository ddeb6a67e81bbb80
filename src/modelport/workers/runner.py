"""`modelport worker NAME`: run one model's OpenAI server in this process, in the foreground."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from modelport.config import (
    AutoModel,
    Config,
    LlamaCppModel,
    ModelConfig,
    OpenAIUpstreamModel,
    VllmModel,
)
from modelport.config.cpus import usable_cpus
from modelport.errors import ConfigError
from modelport.config.locations import resolve_location
from modelport.engines.registry import ENGINES
from modelport.workers.ports import port_problem
from modelport.workers.worker_auth import worker_access

logger = logging.getLogger("modelport.worker")
# The one-model config a worker started by the gateway runs with (JSON, see
# supervisor.worker_spec); read here, so a worker never imports the supervisor.
WORKER_SPEC_ENV = "MODELPORT_WORKER_SPEC"


def concrete_model(model: ModelConfig, path: Path) -> ModelConfig:
    """For `engine: auto`, the config of the engine chosen for these files and this machine."""
    if not isinstance(model, AutoModel):
        return model
    from modelport.engines.selection import choose_engine, gpu_available, vllm_available

    engine, warning = choose_engine(model, path, has_vllm=vllm_available(), has_gpu=gpu_available())
    if warning:
        logger.warning("model '%s': %s", model.name, warning)
    fields = model.model_dump(exclude={"engine", "options", "context_length", "parallel"})
    fields.update(model.options)
    fields["engine"] = engine
    if engine == "llamacpp":
        fields["parallel"] = model.parallel
        if model.context_length:
            fields["context_length"] = model.context_length
    elif engine == "transformers":
        fields["parallel"] = model.parallel
        fields["context_length"] = model.context_length
    elif engine == "vllm" and model.context_length:
        fields["max_model_len"] = model.context_length
    return ENGINES[engine].config.model_validate(fields)


def _wait_for_port(host: str, port: int, owner: str, wait_s: float = 5.0) -> str | None:
    """None once host:port can be bound; else why not, after `wait_s`. The wait covers a
    restart, when the dead predecessor's connections can hold the port for a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        problem = port_problem(host, port, owner)
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(0.2)


def _announce(model: ModelConfig, host: str, port: int,
              registration: tuple[str, str, float]) -> None:
    """Start the process that announces this worker in Redis while it is healthy."""
    from modelport.workers.announcer import start_announcer
    from modelport.workers.registration import check_advertised_url, this_worker

    redis_url, advertise, ttl_s = registration
    local = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    local = f"[{local}]" if ":" in local else local
    start_announcer(redis_url, this_worker(model, check_advertised_url(advertise)),
                    f"http://{local}:{port}/health", ttl_s)


def run_worker(config: Config, name: str, host: str | None = None, port: int | None = None,
               registration: tuple[str, str, float] | None = None) -> None:
    """`registration`: (Redis URL, advertised URL, TTL) to announce the worker in Redis."""
    # torch's OpenMP threads spin after every parallel region (libgomp: 300,000 turns),
    # taking the cores that this worker's HTTP loop, the gateway and other workers need.
    # Single-text embeddings, 16 clients, 2 cores shared with a soak: 6 requests/s and
    # 165 ms of worker CPU each with the default spin, 35/s and 27 ms with 10,000 turns,
    # 68/s and 13 ms never spinning; but never spinning cost 15-20% on an idle machine,
    # where 10,000 turns lose nothing. libgomp reads it when torch loads: set it first.
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    model = config.model(name)
    cpus = usable_cpus()
    print(f"modelport worker '{name}': {cpus.logical} usable CPU(s): {cpus.why}", flush=True)
    # torch sizes its intra-op pool from this when it loads (libgomp reads it once), which
    # is before any engine could call set_num_threads; an explicit value is kept.
    os.environ.setdefault("OMP_NUM_THREADS", str(getattr(model, "threads", None) or cpus.logical))
    if isinstance(model, OpenAIUpstreamModel):
        raise ConfigError(f"model '{model.name}' is an online API (engine: openai); it has no worker")
    path = resolve_location(model.path, config.models_dir_path(), model.name)
    host = host or model.host
    port = port or model.port
    if port is None:
        raise ConfigError(f"model '{model.name}' has no `port`; pass --port or set it in the config")
    access = worker_access(model, host, config.server.max_body_bytes)
    # Before loading (which can take minutes): a taken port fails now, naming the port.
    problem = _wait_for_port(host, port, f"model '{model.name}'")
    if problem:
        raise ConfigError(problem)
    model = concrete_model(model, path)
    if registration is not None:
        _announce(model, host, port, registration)
    spec = ENGINES.get(model.engine)
    if spec is not None and spec.load is not None:
        from modelport.workers.app import serve

        serve(spec.loader()(model, path), access, host, port, timeout_graceful_shutdown=5)
    elif isinstance(model, LlamaCppModel):
        from modelport.workers import llamacpp_worker

        llamacpp_worker.run(model, path, host, port, access)
    elif isinstance(model, VllmModel):
        from modelport.engines.selection import check_vllm_requested, gpu_available, vllm_available
        from modelport.engines.vllm_command import vllm_command, vllm_env

        check_vllm_requested(vllm_available(), gpu_available())
        argv = vllm_command(model, path, host, port)
        env = {**os.environ, **vllm_env(model)}
        if access.keys:
            # vLLM reads one key from its environment (not argv, which `ps` shows);
            # the gateway's secret comes first when the supervisor started this worker.
            env["VLLM_API_KEY"] = access.keys[0]
        # Replace this process so the supervisor's PID is vLLM's own server.
        os.execvpe(argv[0], argv, env)
    else:  # pragma: no cover - the config union is exhaustive
        raise ConfigError(f"model '{model.name}': engine {model.engine} has no worker")
