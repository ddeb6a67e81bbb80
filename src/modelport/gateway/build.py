"""Compose the gateway: chosen models -> deployments, upstream clients and the supervisor."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelport.api.state import GatewayState
from modelport.config import Config, ModelConfig, OpenAIUpstreamModel, PluginModel, load_policy
from modelport.errors import ConfigError
from modelport.config.locations import resolve_location
from modelport.providers.base import Provider
from modelport.providers.factory import local_worker_provider, online_provider
from modelport.routing.deployments import (
    Deployment,
    DeploymentStatus,
    Replica,
    request_limit,
    running_slots,
)
from modelport.routing.replica import CONFIGURED, LOCAL
from modelport.routing.registry import ModelRegistry
from modelport.store import Store
from modelport.tools.support import ToolSupport, tool_support
from modelport.workers.listeners import descends_from, listener_pids, modelport_server_on
from modelport.workers.ports import is_loopback, port_problem
from modelport.workers.on_demand import ModelLoader
from modelport.workers.stall_watch import StallWatch
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


def processes_problem(config: Config, processes: int | None = None) -> str | None:
    """Why `processes` gateway processes (default: server.processes) cannot serve this
    config, or None."""
    server = config.server
    processes = processes or server.process_count()[0]
    if processes == 1:
        return None
    if not sys.platform.startswith("linux"):
        # Elsewhere SO_REUSEPORT does not spread connections (one process would get them).
        return (f"server.processes is {processes}, but sharing a port between processes "
                "needs Linux; set processes: 1")
    if server.master_key and not server.redis_url:
        # Each process would count every key's rpm, tpm, parallel requests and budget in
        # its own memory: a key could use `processes` times its limits.
        return (f"server.processes is {processes} and virtual keys are on (a master key "
                "is set), but there is no server.redis_url: each process would count the keys' "
                "limits alone, so a key could use them several times over. Set "
                "server.redis_url (a redis:// URL) or processes: 1")
    return None


def select_models(config: Config, names: list[str] | None) -> list[ModelConfig]:
    """The models named (or every one with a load policy), plus the fallbacks they rely on."""
    chosen: list[ModelConfig] = (
        [config.model(name) for name in names] if names
        else [model for model in config.models if load_policy(model) is not None]
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


def model_problems(config: Config, model: ModelConfig) -> list[str]:
    """Files that are missing, an engine that cannot run here, a worker open to the network."""
    if isinstance(model, OpenAIUpstreamModel):
        return []
    problems = []
    if not is_loopback(model.host) and model.worker_key is None:
        problems.append(worker_host_problem(model.name, model.host))
    if model.replicas == 0:
        return problems  # no worker here: the files are on the machines that serve it
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


def capacity_problem(config: Config, models: list[ModelConfig]) -> str | None:
    """More `load: always` local models than server.max_loaded lets run."""
    limit = config.server.max_loaded
    always = [m.name for m in models
              if not isinstance(m, OpenAIUpstreamModel) and (m.load or "always") == "always"]
    if limit is None or len(always) <= limit:
        return None
    return (f"server.max_loaded is {limit}, but {len(always)} local models load with the "
            f"server ({', '.join(always)}); raise max_loaded or give some `load: on_demand`")


def claimed_ports(models: Iterable[ModelConfig]) -> set[int]:
    """Ports models name for their workers (a model's `port` and the ones after it for
    its further replicas)."""
    ports: set[int] = set()
    for model in models:
        first = getattr(model, "port", None)
        if first:
            ports.update(range(first, first + max(model.replicas, 1)))  # type: ignore[union-attr]
    return ports


def _port_problems(config: Config, models: list[ModelConfig]) -> list[str]:
    server = config.server
    problems = []
    running = None  # a modelport server already on server.port: its workers hold theirs
    gateway = port_problem(server.host, server.port, "the gateway (server.port)")
    if gateway:
        running = modelport_server_on(server.port)
        problems.append(gateway if running is None else already_serving(server.port, running))
    claimed = {server.port: "the gateway (server.port)"}
    for model in models:
        if isinstance(model, OpenAIUpstreamModel) or model.port is None:
            continue
        for index in range(model.replicas):
            port = model.port + index
            owner = f"model '{model.name}'" + (f" (replica {index})" if index else "")
            if port in claimed:
                # Not yet listening, so binding it now would succeed: compare the numbers.
                problems.append(f"{owner}: port {port} is also the port of "
                                f"{claimed[port]}; give the worker its own port, or omit "
                                "`port` to have a free one chosen")
                continue
            claimed[port] = owner
            problem = port_problem(model.host, port, owner)
            if problem and not (running and any(
                    descends_from(pid, running) for pid in listener_pids(port))):
                problems.append(problem)
    return problems


def already_serving(port: int, pid: int) -> str:
    return (f"a modelport server is already serving on port {port} (pid {pid}); stop it "
            f"(kill {pid}) or give this one another server.port")


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
    processes = processes_problem(config)
    if processes:
        report.problems.append(processes)
    for model in config.models:
        found = model_problems(config, model)
        (report.problems if model in models else report.notes).extend(found)
    report.problems += _port_problems(config, models)
    capacity = capacity_problem(config, models)
    if capacity:
        report.problems.append(capacity)
    try:
        state = build_state(config, names)
    except ConfigError as error:
        report.problems.append(str(error))
    else:
        report.state = state if not report.problems else None
    return report


def _connect_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "", "::") else bind_host


@dataclass
class BuiltModel:
    """One served model as built for the gateway: its deployment (with its replicas, each
    with its provider) and the provider of its first replica (`state.clients`)."""

    deployment: Deployment
    provider: Provider

    @property
    def has_workers(self) -> bool:
        return bool(self.deployment.local_replicas)


def build_model(config: Config, model: ModelConfig, taken: set[int]) -> BuiltModel:
    """The deployment of one model with its replicas; each local replica gets a free port
    (added to `taken`) unless the model names its first one. Raises ConfigError for an
    online model it cannot reach."""
    if isinstance(model, OpenAIUpstreamModel):
        provider = online_provider(model, config)
        where = f"plugin:{model.provider}" if isinstance(model, PluginModel) else model.base_url
        replicas = [Replica(f"{model.name}#0", where or "", request_limit(model),
                            capacity=running_slots(model), origin=CONFIGURED, provider=provider,
                            status=DeploymentStatus.READY)]
        replicas += configured_replicas(model, lambda url, key: online_provider(
            model.model_copy(update={"base_url": url, "api_key": key, "vendor": None}), config))
        deployment = Deployment(model, limit=request_limit(model), replicas=replicas,
                                capabilities=provider.capabilities, load=model.load or "always")
        return BuiltModel(deployment, provider)
    tools = tool_support(model, config.models_dir_path())
    # A model not named in a `serve --model` list nor `autostart`ed that is served anyway
    # (a fallback, or named) loads as it always did: with the server.
    load = model.load or "always"
    status = DeploymentStatus.UNLOADED if load == "on_demand" else DeploymentStatus.STARTING
    replicas = [local_replica(model, index, taken, tools, status)
                for index in range(model.replicas)]
    replicas += configured_replicas(
        model, lambda url, key: local_worker_provider(model, url, key or "", tools))
    provider = replicas[0].provider if replicas else \
        local_worker_provider(model, "http://127.0.0.1:9/v1", "", tools)
    deployment = Deployment(model, limit=request_limit(model), replicas=replicas,
                            capabilities=provider.capabilities, load=load)
    return BuiltModel(deployment, provider)


def local_replica(model: ModelConfig, index: int, taken: set[int], tools: ToolSupport,
                  status: DeploymentStatus) -> Replica:
    """Worker `index` of a local model: its port, its per-run secret, its provider."""
    host = _connect_host(model.host)  # type: ignore[union-attr]
    first = model.port  # type: ignore[union-attr]
    port = first + index if first else free_port(host, frozenset(taken))
    taken.add(port)
    base_url = f"http://{host}:{port}/v1"
    secret = secrets.token_urlsafe(32)
    return Replica(f"{model.name}#{index}", base_url, request_limit(model),
                   capacity=running_slots(model), origin=LOCAL, port=port, secret=secret,
                   index=index, status=status,
                   provider=local_worker_provider(model, base_url, secret, tools))


def configured_replicas(model: ModelConfig,
                        provider_for: Callable[[str, str | None], Provider]) -> list[Replica]:
    """The model's `deployments:` entries, each a replica answered through its own client."""
    return [Replica(f"{model.name}@{_host_port(entry.url)}", entry.url, request_limit(model),
                    capacity=running_slots(model), weight=entry.weight, origin=CONFIGURED,
                    provider=provider_for(entry.url, entry.api_key_value),
                    status=DeploymentStatus.READY)
            for entry in model.deployments]


def _host_port(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def build_models(config: Config, models: list[ModelConfig], taken: set[int]) -> list[BuiltModel]:
    """Every model's BuiltModel, or one ConfigError naming every model's problem."""
    built: list[BuiltModel] = []
    problems: list[str] = []
    for model in models:
        try:
            built.append(build_model(config, model, taken))
        except ConfigError as error:  # every model's problem, not only the first
            problems.append(str(error))
    if problems:
        raise ConfigError("\n".join(problems))
    return built


def build_state(config: Config, names: list[str] | None = None) -> GatewayState:
    models = select_models(config, names)
    if not models:
        raise ConfigError("no models to serve: add models to the config or name one with --model")
    taken = {config.server.port, *claimed_ports(models)}
    built = build_models(config, models, taken)
    deployments = [b.deployment for b in built]
    link_fallbacks(config, deployments)
    supervisor = WorkerSupervisor(config, [b.deployment for b in built if b.has_workers])
    registry = ModelRegistry(deployments)
    store = Store.from_config(config)  # opened by the app's lifespan, not here
    state = GatewayState(config=config, registry=registry,
                         clients={b.deployment.name: b.provider for b in built},
                         lifecycle=supervisor,  # type: ignore[arg-type]
                         keys=store.keys, usage=store.usage, store=store)
    # `clients` holds each model's provider; all of them are closed with the app.
    state.loader = ModelLoader(registry, supervisor, lambda: state.config.server,
                               lambda: state.config.models_dir_path())
    if config.server.redis_url:
        from modelport.routing.shared_state import SharedRouting
        from modelport.workers.remote_replicas import RemoteReplicas

        state.remote_replicas = RemoteReplicas(registry, str.__str__(config.server.redis_url),
                                               lambda: state.config.models_dir_path())
        state.shared_routing = SharedRouting(registry, str.__str__(config.server.redis_url))
        state.services.append(state.shared_routing)
        from modelport.store.key_events import KeyEvents

        # Revocations and new keys reach the other gateways at once, not at the next poll.
        state.services.append(KeyEvents(store.keys, str.__str__(config.server.redis_url)))
    state.services.append(StallWatch(registry, supervisor, lambda: state.config.server,
                                     state.shared_routing))
    return state


def link_fallbacks(config: Config, deployments: list[Deployment]) -> None:
    by_name = {d.name: d for d in deployments}
    for deployment in deployments:
        targets = [by_name[config.model(t).name] for t in getattr(deployment.config, "fallbacks", ())]
        for target in targets:
            if target.kind != deployment.kind:
                raise ConfigError(
                    f"model '{deployment.name}' falls back to '{target.name}', but one is "
                    f"a {deployment.kind} model and the other a {target.kind} model")
        deployment.link_fallbacks(targets)
