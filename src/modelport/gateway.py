"""Compose the gateway: chosen models -> deployments, upstream clients and the supervisor."""

from __future__ import annotations

import ipaddress
import socket

from modelport.api.state import GatewayState
from modelport.config import Config, ModelConfig, OpenAIUpstreamModel
from modelport.errors import ConfigError
from modelport.locations import resolve_location
from modelport.routing.deployments import Deployment, DeploymentStatus, request_limit
from modelport.routing.registry import ModelRegistry
from modelport.upstream import UpstreamClient
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
    if names:
        chosen: list[ModelConfig] = []
        for name in names:
            model = config.model(name)
            if model not in chosen:
                chosen.append(model)
        return chosen
    return [model for model in config.models if model.autostart]


def check_model_files(config: Config, models: list[ModelConfig]) -> None:
    """Fail at start-up, naming every path tried, rather than in a worker later."""
    problems = []
    for model in models:
        if isinstance(model, OpenAIUpstreamModel):
            continue
        try:
            resolve_location(model.path, config.models_dir_path(), model.name)
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
    clients: dict[str, UpstreamClient] = {}
    ports: dict[str, int] = {}
    local: list[Deployment] = []
    for model in models:
        if isinstance(model, OpenAIUpstreamModel):
            deployment = Deployment(model, model.base_url, request_limit(model),
                                    status=DeploymentStatus.READY)
            clients[model.name] = UpstreamClient(
                model.base_url, label=model.name, api_key=model.api_key,
                connect_timeout=model.connect_timeout, read_timeout=model.read_timeout,
                proxy=model.proxy,
            )
        else:
            port = model.port or free_port(_connect_host(model.host))
            ports[model.name] = port
            base_url = f"http://{_connect_host(model.host)}:{port}/v1"
            deployment = Deployment(model, base_url, request_limit(model))
            # Local generations can be long; only a silent worker (no byte for an hour) times out.
            clients[model.name] = UpstreamClient(base_url, label=model.name, read_timeout=3600)
            local.append(deployment)
        deployments.append(deployment)
    supervisor = WorkerSupervisor(config, local, ports) if local else None
    return GatewayState(config=config, registry=ModelRegistry(deployments), clients=clients,
                        lifecycle=supervisor)
