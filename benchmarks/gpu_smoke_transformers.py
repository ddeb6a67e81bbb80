#!/usr/bin/env python
"""GPU smoke check of the transformers engine: load a checkpoint folder on CUDA through
modelport's TransformersEngine, answer one chat question, report speed and GPU memory.

    python benchmarks/gpu_smoke_transformers.py /models/Qwen2.5-0.5B-Instruct
    python benchmarks/gpu_smoke_transformers.py /models/Qwen2.5-7B-Instruct --load-8bit --gpus 0

Not a test (pytest does not collect it): it needs a CUDA GPU. Offline: nothing is
downloaded, the folder must hold the whole checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="Hugging Face checkpoint folder")
    parser.add_argument("--load-8bit", action="store_true", help="bitsandbytes 8-bit weights")
    parser.add_argument("--load-4bit", action="store_true", help="bitsandbytes 4-bit weights")
    parser.add_argument("--gpus", help="CUDA_VISIBLE_DEVICES for the run, e.g. 0 or 0,1")
    parser.add_argument("--max-gpu-memory", help="per-GPU cap, e.g. 20GiB")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"]
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--question", default="What is the capital of France? Answer in one sentence."
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from modelport.config import TransformersModel
    from modelport.engines.transformers_engine import SamplingParams, TransformersEngine
    from modelport.errors import ConfigError

    model = TransformersModel(
        name=args.checkpoint.name,
        engine="transformers",
        path=str(args.checkpoint),
        device="cuda",
        dtype=args.dtype,
        gpus=args.gpus,
        max_gpu_memory=args.max_gpu_memory,
        load_8bit=args.load_8bit,
        load_4bit=args.load_4bit,
    )
    started = time.perf_counter()
    try:
        engine = TransformersEngine.load(model, args.checkpoint.resolve())
    except ConfigError as error:
        sys.exit(f"cannot load: {error.message}")
    load_s = time.perf_counter() - started

    import torch

    prompt = engine.chat_prompt([{"role": "user", "content": args.question}])
    engine.generate(prompt, SamplingParams(temperature=0, max_tokens=8))  # CUDA warm-up
    devices = range(torch.cuda.device_count())
    for device in devices:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    completion = engine.generate(prompt, SamplingParams(temperature=0, max_tokens=args.max_tokens))
    elapsed = time.perf_counter() - started
    report = {
        "checkpoint": str(args.checkpoint),
        "gpu": torch.cuda.get_device_name(0),
        "load_s": round(load_s, 1),
        "answer": completion.text,
        "finish_reason": completion.finish_reason,
        "completion_tokens": completion.completion_tokens,
        "tok_s": round(completion.completion_tokens / elapsed, 1),
        # summed over the visible GPUs, for models spread by device_map="auto"
        "max_memory_allocated_gib": round(
            sum(torch.cuda.max_memory_allocated(d) for d in devices) / 2**30, 2
        ),
        "device_map": sorted(
            {
                str(v)
                for v in (getattr(engine.checkpoint.model, "hf_device_map", None) or {}).values()
            }
        ),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
