"""Per-device residency: which devices a model counts on, what a checkpoint holds in the
dtype it loads in, what a vLLM server takes, and `server.memory_budget` per device
(parsed, refused when wrong, and applied by the loader)."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest

from modelport.config import parse_config
from modelport.engines.gpus import parse_gpu_listing
from modelport.errors import ConfigError
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.registry import ModelRegistry
from modelport.routing.residency import (
    checkpoint_bytes,
    devices_of,
    loaded_dtype,
    stored_dtype,
    vllm_bytes,
)
from modelport.workers import footprints
from modelport.workers.on_demand import ModelLoader
from support.models import SMOLLM2 as GGUF
from support.stand_in_supervisor import StandInSupervisor


def model(**fields):
    return parse_config({"models": [{"name": "m", **fields}]}).models[0]


def test_the_device_a_model_counts_on_follows_its_engine_settings():
    assert devices_of(model(engine="llamacpp", path="x.gguf"), 0, True) == ("cpu",)
    gpu_llama = model(engine="llamacpp", path="x.gguf", gpu_layers=-1)
    assert devices_of(gpu_llama, 0, gpu_present=True) == ("cuda:0",)
    assert devices_of(gpu_llama, 0, gpu_present=False) == ("cpu",)  # auto: no GPU here
    assert devices_of(model(engine="llamacpp", path="x.gguf", gpu_layers=8, device="cpu"),
                      0, True) == ("cpu",)
    assert devices_of(model(engine="transformers", path="d", device="cuda", gpus="1"),
                      0, True) == ("cuda:1",)
    assert devices_of(model(engine="transformers", path="d"), 0, False) == ("cpu",)
    split = model(engine="transformers", path="d", device="cuda", gpus=["0", "2,3"], replicas=2)
    assert devices_of(split, 1, True) == ("cuda:2", "cuda:3")
    assert devices_of(model(engine="vllm", path="d", tensor_parallel_size=2, gpus="2,3"),
                      0, True) == ("cuda:2", "cuda:3")
    assert devices_of(model(engine="vllm", path="d"), 0, False) == ("cuda:0",)


def test_vllm_takes_its_share_of_each_gpu():
    memory = {"cuda:0": 80 * 2**30, "cuda:1": 80 * 2**30}
    assert vllm_bytes(0.5, ("cuda:0", "cuda:1"), memory) == {"cuda:0": 40 * 2**30,
                                                             "cuda:1": 40 * 2**30}
    assert parse_gpu_listing("0, 81559\n1, 81559\n") == {"cuda:0": 81559 * 2**20,
                                                         "cuda:1": 81559 * 2**20}
    assert parse_gpu_listing("No devices were found") == {}


def write_safetensors(path: Path, dtype: str, payload: int) -> None:
    header = json.dumps({"w": {"dtype": dtype, "shape": [payload // 4],
                               "data_offsets": [0, payload]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * payload)


def test_a_checkpoint_counts_its_weights_in_the_dtype_it_loads_in(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", "F32", 4000)
    (tmp_path / "tokenizer.json").write_bytes(b"{}" * 50)
    weights = (tmp_path / "model.safetensors").stat().st_size
    assert stored_dtype(tmp_path) == "float32"  # from the safetensors header
    assert checkpoint_bytes(tmp_path, None) == weights + 100
    assert checkpoint_bytes(tmp_path, "float16") == round(weights / 2) + 100
    assert checkpoint_bytes(tmp_path, "int4") == round(weights / 8) + 100
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert stored_dtype(tmp_path) == "bfloat16"  # the config says, when it does


def test_the_dtype_a_transformers_model_loads_in_is_the_engines_choice():
    plain = model(engine="transformers", path="d")
    assert loaded_dtype(plain, "cuda:0", "float16") is None  # as stored
    assert loaded_dtype(plain, "cpu", "float16") == "float32"  # slow float16 on a CPU
    assert loaded_dtype(plain, "cpu", "bfloat16") is None
    assert loaded_dtype(model(engine="transformers", path="d", dtype="float16"), "cuda:0",
                        "float32") == "float16"
    assert loaded_dtype(model(engine="transformers", path="d", load_8bit=True), "cuda:0",
                        "float16") == "int8"


def test_memory_budget_is_one_size_for_the_cpu_or_one_per_device():
    assert parse_config({"server": {"memory_budget": "2GiB"}}).server.memory_budgets() == \
        {"cpu": 2 * 2**30}
    server = parse_config({"server": {"memory_budget": {"cpu": "8GiB", "cuda:0": "70GiB"},
                                      "swap_max_wait_s": 5}}).server
    assert server.memory_budgets() == {"cpu": 8 * 2**30, "cuda:0": 70 * 2**30}
    assert server.swap_max_wait_s == 5
    assert parse_config({}).server.memory_budgets() is None


@pytest.mark.parametrize("budget, says", [
    ({"gpu0": "1GiB"}, "unknown device 'gpu0'"),
    ({"cuda": "1GiB"}, "unknown device 'cuda'"),
    ({"cuda:0": -1}, "cannot be negative (cuda:0: -1)"),
    ("-2GiB", "cannot be negative"),
    ({"cpu": "lots"}, "server.memory_budget"),
])
def test_a_wrong_memory_budget_is_a_clear_config_error(budget, says):
    with pytest.raises(ConfigError) as error:
        parse_config({"server": {"memory_budget": budget}})
    assert says in str(error.value)


def test_a_negative_swap_max_wait_is_refused():
    for where in ({"server": {"swap_max_wait_s": -1}},
                  {"models": [{"name": "m", "engine": "llamacpp", "path": GGUF,
                               "swap_max_wait_s": -1}]}):
        with pytest.raises(ConfigError, match="swap_max_wait_s"):
            parse_config(where)


def loader_for(models: list[dict], **server):
    config = parse_config({"server": server, "models": [
        {"engine": "llamacpp", "path": GGUF, "load": "on_demand", **m} for m in models]})
    registry = ModelRegistry([Deployment(m, "http://127.0.0.1:9/v1", 8, load="on_demand",
                                         status=DeploymentStatus.UNLOADED)
                              for m in config.models])
    supervisor = StandInSupervisor()
    return ModelLoader(registry, supervisor, lambda: config.server,
                       lambda: config.models_dir_path()), supervisor, registry


def test_a_model_on_the_gpu_does_not_count_against_the_cpu_budget(monkeypatch):
    monkeypatch.setattr(footprints, "gpu_memory_bytes", lambda: {"cuda:0": 2**30})

    async def go():
        loader, supervisor, registry = loader_for(
            [{"name": "gpu", "gpu_layers": -1, "context_length": 512},
             {"name": "cpu", "context_length": 512}, {"name": "cpu2", "context_length": 512}],
            memory_budget={"cpu": "200MB", "cuda:0": "200MB"})
        sizes = {name: loader.memory_bytes(registry.get(name)) for name in ("gpu", "cpu")}
        for name in ("gpu", "cpu", "cpu2"):
            await loader.ensure_loaded(registry.get(name))
        view = loader.footprints.devices_view(registry)
        return sizes, supervisor.halted, view
    sizes, halted, view = asyncio.run(go())
    assert set(sizes["gpu"]) == {"cuda:0"} and set(sizes["cpu"]) == {"cpu"}
    assert halted == ["cpu"]  # the second CPU model took the first one's room, not the GPU's
    assert view["cuda:0"]["models"] == ["gpu"] and view["cpu"]["models"] == ["cpu2"]
    assert view["cpu"]["used_bytes"] == sizes["cpu"]["cpu"]
    assert view["cpu"]["budget_bytes"] == 200_000_000


def test_an_echo_model_holds_nothing():
    async def go():
        config = parse_config({"server": {"memory_budget": "1MB"}, "models": [
            {"name": "e", "engine": "echo", "load": "on_demand"}]})
        registry = ModelRegistry([Deployment(config.models[0], "http://127.0.0.1:9/v1", 8,
                                             load="on_demand", status=DeploymentStatus.UNLOADED)])
        loader = ModelLoader(registry, StandInSupervisor(), lambda: config.server,
                             lambda: config.models_dir_path())
        await loader.ensure_loaded(registry.get("e"))
        return loader.memory_bytes(registry.get("e")), loader.file_bytes(registry.get("e"))
    assert asyncio.run(go()) == ({"cpu": 0}, 0)
