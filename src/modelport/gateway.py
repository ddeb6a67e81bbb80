"""Compose the gateway: chosen models -> deployments, upstream clients and the supervisor."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from modelport.api.state import GatewayState
from modelport.config import Config, ModelConfig, OpenAIUpstreamModel, PluginModel
from modelport.errors import ConfigError
from modelport.locations import resolve_location
from modelport.providers.base import Provider
from modelport.providers.factory import local_worker_provider, online_provider
from modelport.routing.deployments import Deployment, DeploymentStatus, request_limit
from modelport.routing.registry import ModelRegistry
from modelport.store import Store
from modelport.tool_support import tool_support
from modelport.workers.ports import is_loopback, port_problem
from modelport.workers.supervisor import WorkerSupervisor
from modelport.workers.worker_auth import worker_host_problem

__all__ = ["StartupReport", "build_state", "is_loopback", "select_models", "validate_startup"]


def free_port(host: str = "127.0.0.1", avoid: frozenset[int] = frozenset()) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        # The gateway binds only after this runs, so the OS may hand out its port.
        if port not in avoid:
            return port


def _bind_problem(config: Config, allow_public: bool) -> str | None:
    server = config.server
    if is_loopback(server.host) or server.api_keys or allow_public or server.allow_public_bind:
        return None
    return (
        f"refusing to serve on {server.host} without API keys: anyone on the network could use "
        "your models. Pass --api-key KEY (or set MODELPORT_API_KEY, or server.api_keys), "
        "bind 127.0.0.1, "
        "or pass --allow-public if this is really intended"
    )


def select_models(config: Config, names: list[str] | None) -> list[ModelConfig]:
    """The models named (or every autostart one), plus the fallbacks they rely on."""
    chosen: list[ModelConfig] = (
        [config.model(name) for name in names] if names
        else [model for model in config.models if model.autostart]
    )
    for model in chosen:  # grows while iterating: fallbacks of fallbacks are served too
        for target in getattr(model, "fallbacks", ()):
            fallback = config.model(target)
            if fallback not in chosen:
                chosen.append(fallback)
    unique: list[ModelConfig] = []
    for model in chosen:
        if model not in unique:
            unique.append(model)
    return unique


def _model_problems(config: Config, model: ModelConfig) -> list[str]:
    """Files that are missing, an engine that cannot run here, a worker open to the network."""
    if isinstance(model, OpenAIUpstreamModel):
        return []
    problems = []
    if not is_loopback(model.host) and model.worker_key is None:
        problems.append(worker_host_problem(model.name, model.host))
    try:
        resolve_location(model.path, config.models_dir_path(), model.name)
        if model.engine == "vllm":
            from modelport.engines.selection import (
                check_vllm_requested,
                gpu_available,
                vllm_available,
            )

            check_vllm_requested(vllm_available(), gpu_available(), model.name)
    except ConfigError as error:
        problems.append(str(error))
    return problems


def _port_problems(config: Config, models: list[ModelConfig]) -> list[str]:
    server = config.server
    problems = []
    gateway = port_problem(server.host, server.port, "the gateway (server.port)")
    if gateway:
        problems.append(gateway)
    claimed = {server.port: "the gateway (server.port)"}
    for model in models:
        if isinstance(model, OpenAIUpstreamModel) or model.port is None:
            continue
        owner = f"model '{model.name}'"
        if model.port in claimed:
            # Not yet listening, so binding it now would succeed: compare the numbers.
            problems.append(f"{owner}: port {model.port} is also the port of "
                            f"{claimed[model.port]}; give the worker its own port, or omit "
                            "`port` to have a free one chosen")
            continue
        claimed[model.port] = owner
        problem = port_problem(model.host, model.port, owner)
        if problem:
            problems.append(problem)
    return problems


@dataclass
class StartupReport:
    """Every reason `serve` would refuse to start (all of them, not the first), what only
    models that do not start need, and the state to serve when there is no problem."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    state: GatewayState | None = None


def validate_startup(config: Config, names: list[str] | None = None,
                     allow_public: bool = False) -> StartupReport:
    """The start-up checks, shared by `serve` (which refuses on any problem) and `check`."""
    report = StartupReport()
    try:
        models = select_models(config, names)
    except ConfigError as error:
        report.problems.append(str(error))
        return report
    problems, notes = config.unset_variables(models)
    report.problems += problems
    report.notes += notes
    bind = _bind_problem(config, allow_public)
    if bind:
        report.problems.append(bind)
    if config.server.metrics_auth and not config.server.master_key:
        report.problems.append("server.metrics_auth puts /metrics behind the master key, but "
                               "no master key is set (server.master_key or --master-key)")
    for model in config.models:
        found = _model_problems(config, model)
        (report.problems if model in models else report.notes).extend(found)
    report.problems += _port_problems(config, models)
    try:
        state = build_state(config, names)
    except ConfigError as error:
        report.problems.append(str(error))
    else:
        report.state = state if not report.problems else None
    return report


def _connect_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def build_state(config: Config, names: list[str] | None = None) -> GatewayState:
    models = select_models(config, names)
    if not models:
        raise ConfigError("no models to serve: add models to the config or name one with --model")
    deployments: list[Deployment] = []
    providers: dict[str, Provider] = {}
    ports: dict[str, int] = {}
    worker_secrets: dict[str, str] = {}
    local: list[Deployment] = []
    taken = {config.server.port, *(getattr(m, "port", None) or 0 for m in models)}
    problems: list[str] = []
    for model in models:
        if isinstance(model, OpenAIUpstreamModel):
            try:
                provider = online_provider(model, config)
            except ConfigError as error:  # every model's problem, not only the first
                problems.append(str(error))
                continue
            where = f"plugin:{model.provider}" if isinstance(model, PluginModel) else model.base_url
            deployment = Deployment(model, where or "", request_limit(model),
                                    status=DeploymentStatus.READY,
                                    capabilities=provider.capabilities)
        else:
            port = model.port or free_port(_connect_host(model.host), frozenset(taken))
            taken.add(port)
            ports[model.name] = port
            base_url = f"http://{_connect_host(model.host)}:{port}/v1"
            worker_secrets[model.name] = secrets.token_urlsafe(32)
            provider = local_worker_provider(model, base_url, worker_secrets[model.name],
                                             tool_support(model, config.models_dir_path()))
            deployment = Deployment(model, base_url, request_limit(model),
                                    capabilities=provider.capabilities)
            local.append(deployment)
        providers[model.name] = provider
        deployments.append(deployment)
    if problems:
        raise ConfigError("\n".join(problems))
    _link_fallbacks(config, deployments)
    supervisor = WorkerSupervisor(config, local, ports, worker_secrets) if local else None
    store = Store.from_config(config)  # opened by the app's lifespan, not here
    # `clients` holds each model's provider; all of them are closed with the app.
    return GatewayState(config=config, registry=ModelRegistry(deployments),
                        clients=providers, lifecycle=supervisor,  # type: ignore[arg-type]
                        keys=store.keys, usage=store.usage, store=store)


def _link_fallbacks(config: Config, deployments: list[Deployment]) -> None:
    by_name = {d.name: d for d in deployments}
    for deployment in deployments:
        targets = [by_name[config.model(t).name] for t in getattr(deployment.config, "fallbacks", ())]
        for target in targets:
            if target.kind != deployment.kind:
                raise ConfigError(
                    f"model '{deployment.name}' falls back to '{target.name}', but one is "
                    f"a {deployment.kind} model and the other a {target.kind} model")
        deployment.fallbacks = tuple(targets)
