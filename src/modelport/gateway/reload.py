"""Configuration reload: SIGHUP or POST /admin/reload re-reads modelport.yaml.

The new file is validated whole first (schema, unset variables, model files, online
providers): when anything is wrong nothing changes, and the error is returned and logged.
Otherwise, in one step without awaiting (a request sees the old set of models or the new
one, never half of each): new models are added, removed ones stop being served (404 for
new requests) and are dropped once their requests in flight finish, models whose worker
settings changed are restarted (their requests get 503 with Retry-After meanwhile), and
models whose gateway-only settings changed (aliases, load policy, price, fallbacks ...)
keep their worker. Static keys, limits and vendor settings come from the new file too.
Server settings that only a new process can apply (host, port, database ...) are named
in the answer and the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from modelport.api.state import GatewayState
from modelport.config import GATEWAY_ONLY_FIELDS, Config, ModelConfig
from modelport.errors import ConfigError
from modelport.gateway.build import (
    BuiltModel,
    build_models,
    capacity_problem,
    claimed_ports,
    link_fallbacks,
    model_problems,
    processes_problem,
    select_models,
)
from modelport.routing.deployments import Deployment, DeploymentStatus, request_limit
from modelport.workers.ports import port_problem

logger = logging.getLogger("modelport.reload")

# Server settings read once at start-up.
_RESTART_ONLY = ("host", "port", "database_url", "data_dir", "redis_url", "metrics", "usage",
                 "metrics_auth", "processes", "limits_on_outage")


@dataclass
class ReloadReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"object": "reload", **asdict(self)}

    def summary(self) -> str:
        parts = [f"{name}: {', '.join(names)}" for name, names in (
            ("added", self.added), ("removed", self.removed), ("restarted", self.restarted),
            ("updated", self.updated)) if names]
        return "; ".join(parts) or "no model changed"


def _worker_settings(model: ModelConfig) -> dict[str, Any]:
    dumped = model.model_dump(mode="json")
    return {key: value for key, value in dumped.items() if key not in GATEWAY_ONLY_FIELDS}


class ConfigReloader:
    def __init__(self, state: GatewayState, read_config: Callable[[], Config],
                 names: list[str] | None = None) -> None:
        self.state = state
        self._read = read_config  # the file, with the same command-line overrides as serve
        self._names = names
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def detach(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def on_signal(self) -> None:
        """SIGHUP: reload in the event loop (called from the signal handler)."""
        if self._loop is None:
            logger.warning("SIGHUP before the server started; ignored")
            return
        self._loop.call_soon_threadsafe(self._start_logged_reload)

    def _start_logged_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._background.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._background.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError:
            pass  # already logged by reload()

    async def reload(self) -> ReloadReport:
        async with self._lock:
            started = time.monotonic()
            try:
                new, models = self._validated()
                report = self._apply(new, models)
            except ConfigError as error:
                logger.error("config reload refused, nothing changed:\n%s", error)
                raise
            report.seconds = round(time.monotonic() - started, 3)
            logger.info("config reloaded in %.2f s: %s", report.seconds, report.summary())
            if self.state.processes is not None:
                self.state.processes.replace()  # the other processes start from the new file
            if report.needs_restart:
                logger.warning("changed settings that apply at the next start only: %s",
                               ", ".join(report.needs_restart))
            return report

    def _validated(self) -> tuple[Config, list[ModelConfig]]:
        new = self._read()
        models = select_models(new, self._names)
        if not models:
            raise ConfigError("no models to serve: the new config has none")
        problems, _ = new.unset_variables(models)
        for model in models:
            problems += model_problems(new, model)
        capacity = capacity_problem(new, models)
        if capacity:
            problems.append(capacity)
        # The processes running now stay (processes is read at start-up only).
        processes = processes_problem(new, self.state.config.server.process_count()[0])
        if processes:
            problems.append(processes)
        if new.server.metrics_auth and not new.server.master_key:
            problems.append("server.metrics_auth puts /metrics behind the master key, but no "
                            "master key is set")
        if problems:
            raise ConfigError("\n".join(problems))
        return new, models

    def _apply(self, new: Config, models: list[ModelConfig]) -> ReloadReport:
        state, report = self.state, ReloadReport()
        current = {d.name: d for d in state.registry}
        kept: dict[str, Deployment] = {}
        to_build: list[ModelConfig] = []
        for model in models:
            old = current.get(model.name)
            if old is None:
                report.added.append(model.name)
                to_build.append(model)
            elif _worker_settings(old.config) != _worker_settings(model):
                report.restarted.append(model.name)
                to_build.append(model)
            else:
                kept[model.name] = old
                changed = old.config.model_dump(mode="json") != model.model_dump(mode="json")
                (report.updated if changed else report.unchanged).append(model.name)
        report.removed = [name for name in current if name not in {m.name for m in models}]
        supervisor = state.loader.supervisor
        taken = {new.server.port, *supervisor.port_in_use(), *claimed_ports(models)}
        for model in to_build:
            port = getattr(model, "port", None)
            old = current.get(model.name)
            if port and not (old is not None and getattr(old.config, "port", None) == port):
                problem = port_problem(model.host, port, f"model '{model.name}'")
                if problem:
                    raise ConfigError(problem)
        built = {b.deployment.name: b for b in build_models(new, to_build, taken)}
        # Nothing has changed so far; from here on there is no await until the swap.
        saved = {name: (d.config, d.limit, d.load, d.fallbacks) for name, d in kept.items()}
        deployments = []
        try:
            for model in models:
                if model.name in kept:
                    deployment = kept[model.name]
                    self._update_in_place(deployment, model)
                else:
                    deployment = built[model.name].deployment
                deployments.append(deployment)
            link_fallbacks(new, deployments)  # refuses a fallback of another kind
        except ConfigError:
            for name, (config, limit, load, fallbacks) in saved.items():
                kept[name].reconfigure(config, limit, load)
                kept[name].link_fallbacks(fallbacks)
            raise
        for name in report.restarted:
            if built[name].has_workers:
                built[name].deployment.set_status(DeploymentStatus.RESTARTING,
                                                  "restarting with its new settings")
        report.needs_restart = [f"server.{name}" for name in _RESTART_ONLY
                                if getattr(state.config.server, name) != getattr(new.server, name)]
        state.config = new
        supervisor.config = new
        for use_keys in state.key_gates:
            use_keys(new.server)
        state.registry.replace(deployments)
        if state.remote_replicas is not None:
            state.remote_replicas.apply()  # registered workers join the new deployments
        for name, one in built.items():
            state.clients[name] = one.provider
            self._retire(current.get(name), one)
        for name in report.removed:
            state.clients.pop(name, None)
            self._retire(current[name], None)
        for deployment in kept.values():
            if (deployment.is_local and not deployment.on_demand
                    and deployment.status is DeploymentStatus.UNLOADED):
                supervisor.launch(deployment)  # now load: always
        return report

    @staticmethod
    def _update_in_place(deployment: Deployment, model: ModelConfig) -> None:
        deployment.reconfigure(model, request_limit(model), model.load or "always")

    def _retire(self, old: Deployment | None, replacement: BuiltModel | None) -> None:
        """In the background: let the old deployment's requests finish, stop its workers,
        close its providers, then start the replacement (same name, maybe the same ports)."""
        task = asyncio.create_task(self._retire_then_start(old, replacement))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire_then_start(self, old: Deployment | None,
                                 replacement: BuiltModel | None) -> None:
        loader, supervisor = self.state.loader, self.state.loader.supervisor
        drain_s = self.state.config.server.drain_timeout_s
        if old is not None:
            why = "removed from the config" if replacement is None else "settings changed"
            if old.is_local:
                await loader.unload(old, drain_s, why)
            deadline = time.monotonic() + drain_s
            while old.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            old.set_status(DeploymentStatus.STOPPED, why)
            if old.is_local:
                supervisor.forget(old.name)
            for provider in old.providers():
                await provider.close()
        if replacement is None or not replacement.has_workers:
            return
        deployment = replacement.deployment
        supervisor.adopt(deployment)
        if deployment.on_demand:
            deployment.set_status(DeploymentStatus.UNLOADED)
        else:
            supervisor.launch(deployment)
