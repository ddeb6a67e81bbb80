"""Compose the gateway: chosen models -> deployments, upstream clients and the supervisor."""

from __future__ import annotations

import ipaddress
import socket

from modelport.api.state import GatewayState
from modelport.config import Config, ModelConfig, OpenAIUpstreamModel, PluginModel
from modelport.errors import ConfigError
from modelport.locations import resolve_location
from modelport.providers.base import Provider
from modelport.providers.factory import local_worker_provider, online_provider
from modelport.routing.deployments import Deployment, DeploymentStatus, request_limit
from modelport.routing.registry import ModelRegistry
from modelport.workers.supervisor import WorkerSupervisor


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_allowed(config: Config, allow_public: bool) -> None:
    server = config.server
    if is_loopback(server.host) or server.api_keys or allow_public or server.allow_public_bind:
        return
    raise ConfigError(
        f"refusing to serve on {server.host} without API keys: anyone on the network could use "
        "your models. Set server.api_keys (e.g. ['${MODELPORT_API_KEY}']), bind 127.0.0.1, "
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


def check_model_files(config: Config, models: list[ModelConfig]) -> None:
    """Fail at start-up (every path tried, an engine that cannot run here) rather than in
    a worker later."""
    problems = []
    for model in models:
        if isinstance(model, OpenAIUpstreamModel):
            continue
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
    if problems:
        raise ConfigError("\n".join(problems))


def _connect_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


def build_state(config: Config, names: list[str] | None = None) -> GatewayState:
    models = select_models(config, names)
    if not models:
        raise ConfigError("no models to serve: add models to the config or name one with --model")
    deployments: list[Deployment] = []
    providers: dict[str, Provider] = {}
    ports: dict[str, int] = {}
    local: list[Deployment] = []
    for model in models:
        if isinstance(model, OpenAIUpstreamModel):
            provider = online_provider(model, config)
            where = f"plugin:{model.provider}" if isinstance(model, PluginModel) else model.base_url
            deployment = Deployment(model, where or "", request_limit(model),
                                    status=DeploymentStatus.READY,
                                    capabilities=provider.capabilities)
        else:
            port = model.port or free_port(_connect_host(model.host))
            ports[model.name] = port
            base_url = f"http://{_connect_host(model.host)}:{port}/v1"
            provider = local_worker_provider(model, base_url)
            deployment = Deployment(model, base_url, request_limit(model))
            local.append(deployment)
        providers[model.name] = provider
        deployments.append(deployment)
    _link_fallbacks(config, deployments)
    supervisor = WorkerSupervisor(config, local, ports) if local else None
    # `clients` holds each model's provider; all of them are closed with the app.
    return GatewayState(config=config, registry=ModelRegistry(deployments),
                        clients=providers, lifecycle=supervisor)  # type: ignore[arg-type]


def _link_fallbacks(config: Config, deployments: list[Deployment]) -> None:
    by_name = {d.name: d for d in deployments}
    for deployment in deployments:
        targets = [by_name[config.model(t).name] for t in getattr(deployment.config, "fallbacks", ())]
        for target in targets:
            if target.is_embedding != deployment.is_embedding:
                raise ConfigError(
                    f"model '{deployment.name}' falls back to '{target.name}', but one is an "
                    "embedding model and the other a chat model")
        deployment.fallbacks = tuple(targets)
