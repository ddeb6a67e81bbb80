#!/usr/bin/env python
"""Continuous batching in the transformers engine: aggregate tokens/s at 1, 4 and 16
concurrent streams through modelport (a real `modelport serve` with a transformers worker,
gateway -> worker over HTTP) against transformers' own batched generation in this process
(`model.generate` on a left-padded batch of the same prompts): the engine's limit.

Every request is a text completion that counts on from its own start ("17, 18, 19,"),
temperature 0, so each produces exactly --max-tokens tokens on both sides; tokens/s is
all completion tokens over the level's wall time. Each round runs each level through
modelport and in-process back to back (in alternating order), so the machine's other
work weighs on both alike; the table keeps each level's median round. torch gets the threads the worker gets (its usable
CPUs), and both sides run with the worker's OpenMP settings. A third side, the engine
called in this process (no HTTP), separates the batch loop's own cost from the serving path's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modelport.config.cpus import usable_cpus  # noqa: E402

# As the worker sets them (workers/runner.py), before torch is imported here.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
os.environ.setdefault("OMP_NUM_THREADS", str(usable_cpus().logical))

from common import ServeProcess, print_table, write_result  # noqa: E402
from transformers_int8_memory import default_checkpoint  # noqa: E402


def prompt(index: int) -> str:
    start = 3 + 7 * index
    return ", ".join(str(n) for n in range(start, start + 8)) + ","


async def _stream(session, url: str, index: int, max_tokens: int) -> int:
    body = {"model": "bench", "prompt": prompt(index), "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        tokens = 0
        async for raw in response.content:
            line = raw.strip()
            if line.startswith(b"data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
        return tokens


def through_modelport(url: str, streams: int, max_tokens: int) -> tuple[int, float]:
    import aiohttp

    async def go() -> tuple[int, float]:
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = time.perf_counter()
            counts = await asyncio.gather(*(_stream(session, url, i, max_tokens)
                                            for i in range(streams)))
            return sum(counts), time.perf_counter() - started

    return asyncio.run(go())


class InProcess:
    """transformers' batched generate() on the same checkpoint, prompts and device."""

    def __init__(self, checkpoint: Path, device: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto").to(device)
        self.model.eval()
        self.device = device

    def run(self, streams: int, max_tokens: int) -> tuple[int, float]:
        texts = [prompt(i) for i in range(streams)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        started = time.perf_counter()
        with self.torch.inference_mode():
            output = self.model.generate(**batch, max_new_tokens=max_tokens,
                                         min_new_tokens=max_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.eos_token_id)
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        generated = output.shape[1] - batch["input_ids"].shape[1]
        return streams * generated, elapsed

    def run_generate_batch(self, streams: int, max_tokens: int) -> tuple[int, float]:
        """transformers' own continuous batching (paged attention), one config for all."""
        from transformers import GenerationConfig

        inputs = [self.tokenizer(prompt(i))["input_ids"] for i in range(streams)]
        config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1,
                                  pad_token_id=self.tokenizer.eos_token_id)
        started = time.perf_counter()
        outputs = self.model.generate_batch(inputs=inputs, generation_config=config,
                                            warmup=False)
        elapsed = time.perf_counter() - started
        return sum(len(output.generated_tokens) for output in outputs.values()), elapsed


class EngineInProcess:
    """modelport's transformers engine called in this process (no HTTP, no gateway): what
    the batch loop itself costs beside generate()."""

    def __init__(self, checkpoint: Path, device: str, parallel: int):
        from modelport.config import TransformersModel
        from modelport.engines.transformers_engine import TransformersEngine

        self.engine = TransformersEngine.load(TransformersModel(
            name="bench", engine="transformers", path=str(checkpoint), device=device,
            parallel=parallel, max_queue=parallel), checkpoint)

    def run(self, streams: int, max_tokens: int) -> tuple[int, float]:
        from modelport.engines.transformers_requests import Finished
        from modelport.engines.transformers_sampling import SamplingParams

        prompts = [self.engine.text_prompt(prompt(i)) for i in range(streams)]
        finished: list[Finished] = []
        started = time.perf_counter()
        generations = [self.engine.submit(ids, SamplingParams(temperature=0,
                                                              max_tokens=max_tokens),
                                          lambda event: isinstance(event, Finished)
                                          and finished.append(event))
                       for ids in prompts]
        for generation in generations:
            generation.wait()
        elapsed = time.perf_counter() - started
        return sum(event.completion_tokens for event in finished), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path,
                        help="HF checkpoint folder (default: the SmolLM2-135M test checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (both sides)")
    parser.add_argument("--streams", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--with-generate-batch", action="store_true",
                        help="also measure transformers' generate_batch() (continuous batching "
                             "with paged attention) in-process")
    args = parser.parse_args()
    levels = [int(value) for value in args.streams.split(",")]
    checkpoint = (args.checkpoint or default_checkpoint()).resolve()
    # A `timeout` or Ctrl-C still stops the server below (its own session outlives us).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()

    serve = ServeProcess([{"name": "bench", "engine": "transformers", "path": str(checkpoint),
                           "device": args.device, "parallel": max(levels),
                           "max_queue": max(levels)}]).start()
    url = serve.url + "/v1/completions"
    in_process = InProcess(checkpoint, "cuda" if args.device == "cuda" else "cpu")
    engine = EngineInProcess(checkpoint, args.device, max(levels))
    rounds: dict[tuple[str, int], list[float]] = {}
    try:
        through_modelport(url, 2, 8)  # warm-up of both
        in_process.run(2, 8)
        engine.run(2, 8)
        for round_index in range(args.rounds):
            for level in levels:
                # Each level's sides back to back, their order alternating from round to
                # round, so that the other work on the machine weighs on both alike.
                sides = [("modelport", lambda n: through_modelport(url, n, args.max_tokens)),
                         ("in-process", lambda n: in_process.run(n, args.max_tokens)),
                         ("engine", lambda n: engine.run(n, args.max_tokens))]
                if args.with_generate_batch:
                    sides.append(("generate_batch",
                                  lambda n: in_process.run_generate_batch(n, args.max_tokens)))
                for name, run in sides[::-1] if round_index % 2 else sides:
                    tokens, wall = run(level)
                    if tokens != level * args.max_tokens:
                        raise SystemExit(f"{name} gave {tokens} tokens at {level} streams")
                    rounds.setdefault((name, level), []).append(tokens / wall)
    finally:
        serve.stop()
        engine.engine.close()
    load_after = os.getloadavg()

    median = {key: statistics.median(values) for key, values in rounds.items()}
    one_stream = median[("modelport", levels[0])]
    rows = []
    for level in levels:
        ours, theirs = median[("modelport", level)], median[("in-process", level)]
        loop = median[("engine", level)]
        rows.append([level, round(ours, 1), round(theirs, 1), round(ours / theirs, 3),
                     round(ours / one_stream, 2), round(loop, 1), round(loop / theirs, 3)])
        if args.with_generate_batch:
            rows[-1].append(round(median[("generate_batch", level)], 1))
    columns = ["streams", "modelport tok/s", "in-process generate() tok/s",
               "modelport / in-process", f"modelport / {levels[0]} stream",
               "engine in-process tok/s", "engine / generate()"]
    print_table(f"transformers batching, {checkpoint.name}, {args.device}, "
                f"{args.max_tokens} tokens per request, median of {args.rounds} rounds",
                columns + (["generate_batch() tok/s"] if args.with_generate_batch else []), rows)
    load = f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    print(load)
    path = write_result("transformers_batching", {
        "checkpoint": str(checkpoint), "device": args.device, "max_tokens": args.max_tokens,
        "rounds": {f"{name} {level}": [round(v, 1) for v in values]
                   for (name, level), values in rounds.items()},
        "load_average": [load_before, load_after], "threads": os.environ["OMP_NUM_THREADS"]})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
