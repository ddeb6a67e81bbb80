"""The argv and environment of a vLLM worker (no vLLM or GPU needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelport.config import VllmModel
from modelport.engines.vllm_command import vllm_command, vllm_env


def vllm_model(**fields) -> VllmModel:
    return VllmModel(name="qwen2.5-7b", engine="vllm", path="Qwen/Qwen2.5-7B-Instruct", **fields)


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_defaults_map_to_vllm_flags():
    path = Path("/models/Qwen/Qwen2.5-7B-Instruct")
    argv = vllm_command(vllm_model(), path, "127.0.0.1", 20057, python="/venv/bin/python")
    assert argv[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                        "--model", str(path)]
    assert flag_value(argv, "--served-model-name") == "qwen2.5-7b"
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert flag_value(argv, "--port") == "20057"
    assert flag_value(argv, "--tensor-parallel-size") == "1"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.9"
    assert flag_value(argv, "--dtype") == "auto"
    for absent in ("--max-model-len", "--quantization", "--trust-remote-code"):
        assert absent not in argv


def test_every_option_has_its_flag_and_extra_args_come_last():
    model = vllm_model(tensor_parallel_size=4, gpu_memory_utilization=0.75, max_model_len=8192,
                       quantization="gptq", dtype="float16", trust_remote_code=True,
                       extra_args=["--enforce-eager", "--max-num-seqs", "64"])
    argv = vllm_command(model, Path("/m"), "0.0.0.0", 8001)
    assert argv[0] == sys.executable
    assert flag_value(argv, "--tensor-parallel-size") == "4"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.75"
    assert flag_value(argv, "--max-model-len") == "8192"
    assert flag_value(argv, "--quantization") == "gptq"
    assert flag_value(argv, "--dtype") == "float16"
    assert "--trust-remote-code" in argv
    assert argv[-3:] == ["--enforce-eager", "--max-num-seqs", "64"]
    assert all(isinstance(item, str) for item in argv)


def test_env_keeps_the_worker_offline():
    env = vllm_env(vllm_model())
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_parallelism_and_executor_map_to_vllm_flags():
    model = vllm_model(tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2,
                       distributed_executor_backend="mp", gpus="0,1,2,3,4,5,6,7")
    argv = vllm_command(model, Path("/m"), "127.0.0.1", 8001)
    assert (flag_value(argv, "--tensor-parallel-size"), flag_value(argv, "--pipeline-parallel-size"),
            flag_value(argv, "--data-parallel-size"),
            flag_value(argv, "--distributed-executor-backend")) == ("2", "2", "2", "mp")
    assert vllm_env(model)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    plain = vllm_command(vllm_model(), Path("/m"), "127.0.0.1", 8001)
    assert "--data-parallel-size" not in plain and "--distributed-executor-backend" not in plain


def test_too_few_gpus_for_the_parallelism_is_a_config_error_unless_ray_spans_machines():
    with pytest.raises(ValidationError, match="names 2 GPU.*needs 4"):
        vllm_model(tensor_parallel_size=2, pipeline_parallel_size=2, gpus="0,1")
    over_ray = vllm_model(tensor_parallel_size=8, pipeline_parallel_size=2, gpus="0,1",
                          distributed_executor_backend="ray")
    assert "--distributed-executor-backend" in vllm_command(over_ray, Path("/m"), "h", 1)
