#!/usr/bin/env python
"""Residency: loads and latency of a multi-model burst under a memory budget vs count-based
LRU.

Three on-demand models (the default GGUF model, SmolLM2-135M Q4_1, under three names,
each with `context_length` x `parallel` tokens of KV cache) share room for two. Bursts
alternate between them: a burst is `--clients` clients each sending `--per-client`
requests to one model one after the other, and the next model's burst starts `--gap-s`
later, before the earlier ones have ended; `--rounds` passes over the three models.
Every answer is exactly `--max-tokens` tokens long (temperature 0, `ignore_eos`).

The same bursts run against three gateways, one after the other:

- count-based LRU, `max_loaded: 2` (the default without swap_max_wait_s): a load that
  finds both loaded models busy is refused, 503 no_room_to_load;
- count-based LRU swapping at once, `max_loaded: 2, swap_max_wait_s: 0`: the least
  recently used loaded model is unloaded even in the middle of its burst (its running
  requests finish first, its queued ones wait for its next load);
- memory-aware: `memory_budget` fitting two of the models (set from what the previous run
  measured: one loaded model plus one loading fit, two loaded plus one do not),
  `swap_max_wait_s: --swap-max-wait-s`, eviction weighted by reload cost.

For each: loads (from the gateway's log), requests refused or incomplete, latency of the
answered requests (p50/p99, from sending to the whole answer) and the run's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import OUT_DIR, ServeProcess, print_table, summarize_ms, write_result  # noqa: E402
from support.model_bursts import (  # noqa: E402
    BurstRun,
    alternate_bursts,
    loads_in,
    memory_of,
    on_demand_models,
)

MODELS = ["model-a", "model-b", "model-c"]


def run_gateway(server: dict, args: argparse.Namespace) -> tuple[BurstRun, int, dict]:
    gateway = ServeProcess(on_demand_models(MODELS, args.context_length, args.parallel),
                           server, Path(args.workdir)).start()
    try:
        run = asyncio.run(alternate_bursts(gateway.url + "/v1", MODELS, args.rounds,
                                           args.clients, args.per_client, args.gap_s,
                                           args.max_tokens))
        return run, loads_in(gateway.log, MODELS), gateway.health()
    finally:
        gateway.stop()


def summary(run: BurstRun, loads: int) -> dict:
    answered = [a.seconds for a in run.answers if a.status == 200 and a.complete]
    refused: dict[str, int] = {}
    for answer in run.cut:
        refused[str(answer.status)] = refused.get(str(answer.status), 0) + 1
    return {"loads": loads, "requests": len(run.answers), "cut": len(run.cut),
            "cut_by_status": refused, "latency_ms": summarize_ms(answered),
            "wall_s": round(run.seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--per-client", type=int, default=3)
    parser.add_argument("--gap-s", type=float, default=0.3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--swap-max-wait-s", type=float, default=5.0)
    parser.add_argument("--workdir", default=str(OUT_DIR))
    args = parser.parse_args()
    load_before = os.getloadavg()

    results = {}
    run, loads, _ = run_gateway({"max_loaded": 2}, args)
    results["count LRU, max_loaded 2"] = summary(run, loads)
    run, loads, health = run_gateway({"max_loaded": 2, "swap_max_wait_s": 0}, args)
    results["count LRU swapping at once"] = summary(run, loads)
    loaded = [m for m in MODELS if health["models"][m]["memory"]["resident"]]
    held = max(memory_of(health, m) for m in loaded)
    estimate = min(memory_of(health, m) for m in MODELS if m not in loaded) \
        if len(loaded) < len(MODELS) else held
    budget = int(1.5 * held + estimate)
    run, loads, _ = run_gateway({"memory_budget": budget,
                                 "swap_max_wait_s": args.swap_max_wait_s}, args)
    results[f"memory budget, swap_max_wait_s {args.swap_max_wait_s:g}"] = summary(run, loads)

    rows = [[name, r["loads"], r["requests"], r["cut"], r["latency_ms"]["p50"],
             r["latency_ms"]["p99"], r["wall_s"]] for name, r in results.items()]
    print_table("alternating bursts over three models, room for two",
                ["gateway", "loads", "requests", "cut", "p50 ms", "p99 ms", "wall s"], rows)
    load_after = os.getloadavg()
    print(f"budget {budget:,} bytes (one model loaded: {held:,}, estimated before "
          f"loading: {estimate:,}); load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    path = write_result("residency", {
        "results": results, "budget_bytes": budget, "held_bytes": held,
        "estimate_bytes": estimate, "load_average": [load_before[0], load_after[0]],
        "settings": vars(args)})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
