"""The command line and environment of a vLLM worker: vLLM's own OpenAI server.

modelport never re-implements vLLM; an `engine: vllm` model runs vLLM's OpenAI-compatible
server as its worker process, and the supervisor starts it with what is built here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelport.config import VllmModel

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def vllm_command(model: VllmModel, path: Path, host: str, port: int,
                 python: str = sys.executable) -> list[str]:
    """argv for `python -m vllm.entrypoints.openai.api_server` serving `model` from `path`.

    Running the module with our interpreter (rather than the `vllm` script) uses the vLLM
    installed next to modelport, whatever is first on PATH.
    """
    argv = [
        python, "-m", VLLM_SERVER_MODULE,
        "--model", str(path),
        # clients (and our gateway) ask for the configured name, not the folder path
        "--served-model-name", model.name,
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(model.tensor_parallel_size),
        "--pipeline-parallel-size", str(model.pipeline_parallel_size),
        "--gpu-memory-utilization", str(model.gpu_memory_utilization),
        "--dtype", model.dtype,
    ]
    if model.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(model.data_parallel_size)]
    if model.distributed_executor_backend:
        argv += ["--distributed-executor-backend", model.distributed_executor_backend]
    if model.max_model_len is not None:
        argv += ["--max-model-len", str(model.max_model_len)]
    if model.quantization:
        argv += ["--quantization", model.quantization]
    if model.trust_remote_code:
        argv.append("--trust-remote-code")
    # last, so that a flag given here overrides the one derived from a field above
    argv += model.extra_args
    return argv


def vllm_env(model: VllmModel) -> dict[str, str]:
    """Variables to add to the worker's environment.

    The model is local, so the hub is never needed: offline mode makes a missing file an
    error instead of a silent download, and usage statistics are not sent anywhere.
    """
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    if model.gpus:
        env["CUDA_VISIBLE_DEVICES"] = model.gpus
    return env
