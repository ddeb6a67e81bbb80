"""A GGUF worker: llama.cpp's own OpenAI server, hosted in this process by xllamacpp.

llama.cpp's C++ server loop does the continuous batching (`parallel` slots decoded
together), grammar-constrained output for response_format, and cancels a generation
when its HTTP client disconnects, so the worker adds nothing per request.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelport.chat_templates import template_text
from modelport.config import LlamaCppModel
from modelport.config.cpus import usable_cpus
from modelport.errors import ConfigError
from modelport.workers.lifetime import wait_for_stop_signal
from modelport.workers.ports import port_problem
from modelport.workers.worker_auth import WorkerAccess


def build_params(model: LlamaCppModel, path: Path, host: str, port: int,  # noqa: ANN201
                 access: WorkerAccess | None = None):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.hostnames = [host]
    params.port = port
    # llama.cpp checks these itself on every route but /health (and answers 401).
    params.api_keys = list(access.keys) if access else []
    params.model_alias = {model.name}
    params.n_parallel = model.engine_slots
    # Each slot gets the full per-request context; llama.cpp splits n_ctx across slots.
    params.n_ctx = model.context_length * model.engine_slots
    params.cont_batching = True
    params.ctx_shift = False  # an over-long prompt is an error, never silently shifted away
    params.endpoint_slots = True
    params.endpoint_metrics = True
    params.offline = True
    params.use_jinja = True
    threads = model.threads or usable_cpus().physical
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # Threads sleep instead of spin-waiting between steps: the gateway and other workers
    # share these cores, and a preempted spinning thread stalls the whole step
    # (measured here: 4 streams through the gateway 149-156 -> 170-189 tok/s).
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.n_threads_http = max(4, model.engine_slots + 2)
    params.cache_ram_mib = model.prompt_cache_mib
    params.timeout_read = 3600
    params.timeout_write = 3600
    gpu_layers = model.gpu_layers
    if model.device == "cpu":
        gpu_layers = 0
    params.n_gpu_layers = 999 if gpu_layers == -1 else gpu_layers
    if model.chat_template:
        # A built-in name or a file becomes its Jinja text; llama.cpp's own names pass.
        params.chat_template = template_text(model.chat_template)
    if model.reranking:
        # What llama-server's --reranking sets: the model's classification head scores
        # each (query, document) pair, served on /v1/rerank; no text is generated.
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK
        # An encoder reads a pair in one pass, which must fit one physical batch (llama.cpp
        # refuses a longer input); the batch is sized to the context, not the 512 default.
        params.n_batch = params.n_ubatch = model.context_length
    return params


def run(model: LlamaCppModel, path: Path, host: str, port: int, access: WorkerAccess) -> None:
    import xllamacpp

    try:
        server = xllamacpp.Server(build_params(model, path, host, port, access))
    except RuntimeError:
        # llama.cpp says only "Failed to init server"; a port taken since the runner
        # checked it is the one cause worth naming (and not worth restarting for).
        problem = port_problem(host, port, f"model '{model.name}'")
        if problem:
            raise ConfigError(problem) from None
        raise
    print(f"modelport worker '{model.name}': llama.cpp serving on {server.listening_address}",
          flush=True)
    wait_for_stop_signal()
    # llama.cpp's teardown can block on in-flight HTTP threads; the process is ending anyway.
    os._exit(0)
