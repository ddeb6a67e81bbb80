#!/usr/bin/env python
"""Aggregate decode speed of the transformers engine by `parallel` (requests generating
at once, one thread each), with --requests concurrent requests submitted together.

parallel 1 is "serialize behind a lock"; the others are the engine's per-request
threads sharing one set of weights. Same counting prompt, temperature 0, max-tokens
each, so every request produces exactly --max-tokens tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from modelport.config import TransformersModel  # noqa: E402
from modelport.engines.transformers_engine import (  # noqa: E402
    Failed,
    SamplingParams,
    TextDelta,
    TransformersEngine,
)
from transformers_int8_memory import PROMPT, default_checkpoint  # noqa: E402


def _keep_outcome(outcomes: list, event: object) -> None:
    if not isinstance(event, TextDelta):  # Finished or Failed
        outcomes.append(event)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="HF checkpoint folder (default: SmolLM2-135M test checkpoint)",
    )
    parser.add_argument("--parallel", default="1,2,4", help="comma-separated parallel values")
    parser.add_argument("--requests", type=int, default=4, help="concurrent requests per level")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--cpu-int8", action="store_true", help="load with cpu_int8")
    args = parser.parse_args()

    checkpoint = (args.checkpoint or default_checkpoint()).resolve()
    model = TransformersModel(
        name="bench",
        engine="transformers",
        path=str(checkpoint),
        device="cpu",
        cpu_int8=args.cpu_int8,
    )
    loaded = TransformersEngine.load(model, checkpoint)
    prompt = loaded.text_prompt(PROMPT)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    loaded.generate(prompt, params)  # warm-up

    rows, results = [], []
    for parallel in [int(value) for value in args.parallel.split(",")]:
        engine = TransformersEngine(
            loaded.checkpoint, name="bench", parallel=parallel, max_queue=args.requests
        )
        outcomes: list = []
        started = time.perf_counter()
        generations = [
            engine.submit(prompt, params, partial(_keep_outcome, outcomes))
            for _ in range(args.requests)
        ]
        for generation in generations:
            generation.wait()
        elapsed = time.perf_counter() - started
        failures = [event for event in outcomes if isinstance(event, Failed)]
        if failures:
            raise SystemExit(f"parallel {parallel}: {failures[0].error.message}")
        tokens = sum(event.completion_tokens for event in outcomes)
        results.append(
            {
                "parallel": parallel,
                "seconds": round(elapsed, 2),
                "aggregate_tok_s": round(tokens / elapsed, 1),
            }
        )
        rows.append(
            [parallel, args.requests, tokens, round(elapsed, 2), round(tokens / elapsed, 1)]
        )
    print_table(
        f"transformers engine, {checkpoint.name}, cpu{' int8' if args.cpu_int8 else ''}",
        ["parallel", "requests", "tokens", "seconds", "aggregate_tok_s"],
        rows,
    )
    path = write_result(
        "transformers_parallel",
        {
            "checkpoint": str(checkpoint),
            "results": results,
            "max_tokens": args.max_tokens,
            "cpu_int8": args.cpu_int8,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
