"""What each local model counts against `server.memory_budget`, per device, and what
loading it again would cost: the estimates of routing.residency applied to a served
model's files, with what its workers were measured holding and how long its last load
took. Files are read once per model and location."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from modelport.config.locations import resolve_location
from modelport.engines.gpus import gpu_memory_bytes
from modelport.errors import ConfigError
from modelport.routing.deployments import HOLDS_WORKER, Deployment, running_slots
from modelport.routing.residency import (
    checkpoint_bytes,
    devices_of,
    footprint,
    gguf_kv_cache_bytes,
    loaded_dtype,
    spread,
    stored_dtype,
    vllm_bytes,
)

# A load's cost before one was measured: a worker process to start, then the files to
# read (from the page cache, mostly).
_START_S = 1.0
_READ_BYTES_PER_S = 1e9


class WorkerMemory(Protocol):
    def worker_memory(self, name: str) -> int | None: ...


class Footprints:
    def __init__(self, workers: WorkerMemory, models_dir: Callable[[], Path],
                 budgets: Callable[[], Mapping[str, int] | None]) -> None:
        self._workers = workers
        self._models_dir = models_dir
        self._budgets = budgets
        self._files: dict[tuple[str, str, str], int] = {}
        self._kv: dict[tuple[str, str, int], int] = {}
        self._load_s: dict[str, float] = {}

    def of(self, deployment: Deployment) -> dict[str, int]:
        """Bytes per device the model holds (estimated), summed over its local replicas;
        what its workers were measured holding when more."""
        config = deployment.config
        total: dict[str, int] = {}
        gpu = bool(gpu_memory_bytes())
        for index in range(max(1, len(deployment.local_replicas))):
            devices = devices_of(config, index, gpu)
            for device, size in self._replica(deployment, devices).items():
                total[device] = total.get(device, 0) + size
        measured = self._workers.worker_memory(deployment.name) if deployment.pid else None
        return footprint(total, measured)

    def _replica(self, deployment: Deployment, devices: tuple[str, ...]) -> dict[str, int]:
        config = deployment.config
        if config.engine == "echo":
            return {devices[0]: 0}  # no weights
        if config.engine == "vllm":
            memory = {**(self._budgets() or {}), **gpu_memory_bytes()}
            taken = vllm_bytes(config.gpu_memory_utilization, devices, memory)
            if all(taken.values()):
                return taken
            # A GPU of unknown size and no budget for it: its files are all we know.
            return spread(self._file_bytes(deployment, None), devices)
        if config.engine == "llamacpp":
            return {devices[0]: self._file_bytes(deployment, None) + self._kv_cache(deployment)}
        return spread(self._file_bytes(deployment, devices[0]), devices)

    def file_bytes(self, deployment: Deployment) -> int:
        """Bytes of the model's files as stored, once per local replica (each worker loads
        its own copy); 0 when unknown."""
        if deployment.config.engine == "echo":
            return 0
        return self._file_bytes(deployment, None) * max(1, len(deployment.local_replicas))

    def _file_bytes(self, deployment: Deployment, device: str | None) -> int:
        """One copy's bytes; for a checkpoint loaded on `device`, in the dtype it loads in."""
        config = deployment.config
        path = getattr(config, "path", None)
        if path is None:
            return 0
        convert = device is not None and config.engine == "transformers"
        key = (deployment.name, path, device if convert else "")
        if key not in self._files:
            self._files[key] = _size_of(path, self._models_dir(), deployment.name,
                                        config if convert else None, device or "cpu")
        return self._files[key]

    def _kv_cache(self, deployment: Deployment) -> int:
        config = deployment.config
        path = getattr(config, "path", None)
        tokens = (getattr(config, "context_length", None) or 0) * running_slots(config)
        key = (deployment.name, path or "", tokens)
        if key not in self._kv:
            self._kv[key] = _gguf_kv(path, self._models_dir(), deployment.name, tokens) \
                if path else 0
        return self._kv[key]

    # -- what a reload costs ------------------------------------------------------------

    def loaded(self, deployment: Deployment, seconds: float) -> None:
        """Its load just took `seconds`: what loading it again is expected to cost."""
        self._load_s[deployment.name] = seconds

    def reload_s(self, deployment: Deployment) -> float:
        """Seconds loading the model again would take: its last load's, else an estimate
        from its size."""
        if deployment.name in self._load_s:
            return self._load_s[deployment.name]
        return _START_S + sum(self.of(deployment).values()) / _READ_BYTES_PER_S

    # -- what is shown ------------------------------------------------------------------

    def devices_view(self, deployments: Iterable[Deployment]) -> dict[str, dict[str, Any]]:
        """Per device: its budget (None: unbounded), the bytes the models holding a worker
        count there, and which models."""
        budgets = self._budgets() or {}
        view: dict[str, dict[str, Any]] = {
            device: {"budget_bytes": size, "used_bytes": 0, "models": []}
            for device, size in budgets.items()}
        for deployment in deployments:
            if not deployment.is_local or deployment.status not in HOLDS_WORKER:
                continue
            for device, size in self.of(deployment).items():
                entry = view.setdefault(device, {"budget_bytes": None, "used_bytes": 0,
                                                 "models": []})
                entry["used_bytes"] += size
                entry["models"].append(deployment.name)
        return view

    def model_view(self, deployment: Deployment) -> dict[str, Any] | None:
        """A local model's residency: whether it holds memory now, and how much per device
        (what it holds, or would hold once loaded)."""
        if not deployment.is_local:
            return None
        return {"resident": deployment.status in HOLDS_WORKER, "bytes": self.of(deployment)}


def _size_of(location: str, models_dir: Path, name: str, config: Any, device: str) -> int:
    try:
        path = resolve_location(location, models_dir, name)
    except ConfigError:
        return 0
    if path.is_file():
        return path.stat().st_size
    if config is not None:
        return checkpoint_bytes(path, loaded_dtype(config, device, stored_dtype(path)))
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _gguf_kv(location: str, models_dir: Path, name: str, tokens: int) -> int:
    try:
        path = resolve_location(location, models_dir, name)
        return gguf_kv_cache_bytes(path, tokens) if path.is_file() else 0
    except (ConfigError, OSError, ValueError):
        return 0  # unreadable: counted by its file alone
