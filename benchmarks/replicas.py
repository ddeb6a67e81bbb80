#!/usr/bin/env python
"""Replicas: what a second worker of the same model brings, and what prefix affinity
saves on multi-turn conversations.

Part 1, throughput: the default GGUF model (SmolLM2-135M-Instruct Q4_1) with `replicas: 1`
and 8 slots, `replicas: 1` and 16 slots (as many slots as two replicas have together),
the same with one thread, and `replicas: 2` with 8 slots each (threads unset, so the two
workers split the cores: one thread each on two cores),
under `--streams` concurrent streamed chats of `--tokens` tokens each, for `--rounds`
rounds: aggregate output tokens per second, time to first token and request latency.

Part 2, routing: one server with the same model twice, two replicas each (one thread per
worker), `strategy: prefix_affinity` and `strategy: round_robin`. `--conversations`
conversations, each opening with its own system prompt of a few hundred tokens, take
turns in a shuffled order (seeded) for `--turns` follow-up turns; the time to first token
of every follow-up is recorded per strategy, and how often a follow-up landed on the
replica that served its conversation's previous turn.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, ServeProcess, print_table, summarize_ms, write_result  # noqa: E402

TOPICS = ("gardening", "astronomy", "sailing", "baking", "chess", "geology", "jazz",
          "cycling", "origami", "beekeeping", "pottery", "rowing")


def streamed(url: str, model: str, messages: list[dict], max_tokens: int) -> dict:
    """One streamed chat: time to first content token, total time, tokens, replica."""
    started = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=600, json={
            "model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "messages": messages, "stream_options": {"include_usage": True}}) as reply:
        reply.raise_for_status()
        replica = reply.headers.get("x-modelport-replica")
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = orjson.loads(line[6:])
            choices = event.get("choices") or [{}]
            if first is None and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"].get("completion_tokens", 0)
    return {"ttft": first if first is not None else float("nan"),
            "total": time.perf_counter() - started, "tokens": tokens, "replica": replica}


def throughput(replicas: int, parallel: int, threads: int | None, streams: int, rounds: int,
               max_tokens: int) -> dict:
    model = {"name": "smollm2", "engine": "llamacpp", "path": SMOLLM2, "replicas": replicas,
             "context_length": 2048, "parallel": parallel,
             **({"threads": threads} if threads else {})}
    serve = ServeProcess([model]).start()
    try:
        _wait_all_ready(serve)
        messages = [{"role": "user", "content": "Write a long story about a lighthouse."}]
        streamed(serve.url, "smollm2", messages, 8)  # warm up
        results: list[dict] = []
        started = time.perf_counter()
        for _ in range(rounds):
            with ThreadPoolExecutor(streams) as pool:
                results += pool.map(
                    lambda _: streamed(serve.url, "smollm2", messages, max_tokens), range(streams))
        wall = time.perf_counter() - started
    finally:
        serve.stop()
    tokens = sum(r["tokens"] for r in results)
    spread = {name: sum(r["replica"] == name for r in results)
              for name in sorted({r["replica"] for r in results})}
    return {"replicas": replicas, "parallel": parallel, "threads": threads or "split",
            "requests": len(results), "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "ttft": summarize_ms([r["ttft"] for r in results]),
            "latency": summarize_ms([r["total"] for r in results]), "served_by": spread}


def system_prompt(topic: str) -> str:
    rules = " ".join(f"Rule {n}: when the user asks about {topic}, answer in one short "
                     f"sentence, mention {topic} by name, and never repeat rule {n}."
                     for n in range(1, 25))
    return f"You are a helpful assistant who only talks about {topic}. {rules}"


def multi_turn(url: str, model: str, conversations: int, turns: int, seed: int) -> dict:
    rng = random.Random(seed)
    histories = {i: [{"role": "system", "content": system_prompt(TOPICS[i % len(TOPICS)])},
                     {"role": "user", "content": f"One fact about {TOPICS[i % len(TOPICS)]}?"}]
                 for i in range(conversations)}
    last_replica = {i: streamed(url, model, histories[i], 8)["replica"]
                    for i in range(conversations)}
    follow_ups: list[float] = []
    same = 0
    for turn in range(turns):
        order = list(range(conversations))
        rng.shuffle(order)
        for i in order:
            histories[i] += [{"role": "assistant", "content": "Here is a fact."},
                             {"role": "user", "content": f"Another one, number {turn + 2}?"}]
            result = streamed(url, model, histories[i], 8)
            follow_ups.append(result["ttft"])
            same += result["replica"] == last_replica[i]
            last_replica[i] = result["replica"]
    return {"follow_up_ttft": summarize_ms(follow_ups),
            "first_round_ttft": summarize_ms(follow_ups[:conversations]),
            "same_replica_share": round(same / len(follow_ups), 2)}


def routing(conversations: int, turns: int, seed: int) -> dict[str, dict]:
    worker = {"engine": "llamacpp", "path": SMOLLM2, "replicas": 2, "threads": 1,
              "context_length": 4096, "parallel": 2}
    serve = ServeProcess([{"name": "sticky", "strategy": "prefix_affinity", **worker},
                          {"name": "rotating", "strategy": "round_robin", **worker}]).start()
    try:
        _wait_all_ready(serve)
        # Each strategy has its own two workers: neither warms the other's prompt caches.
        return {"round_robin": multi_turn(serve.url, "rotating", conversations, turns, seed),
                "prefix_affinity": multi_turn(serve.url, "sticky", conversations, turns, seed)}
    finally:
        serve.stop()


def _wait_all_ready(serve: ServeProcess, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = serve.health()["models"].values()
        if all(r["state"] == "ready" for m in models for r in m["replicas"]):
            return
        time.sleep(0.2)
    raise TimeoutError("replicas not ready")


def _config(text: str) -> tuple[int, int, int | None]:
    replicas, rest = text.split("x")
    slots, _, threads = rest.partition("t")
    return int(replicas), int(slots), int(threads) if threads else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--configs", default="1x8,1x16,1x16t1,2x8",
                        help="throughput runs: REPLICASxSLOTS[tTHREADS] (threads unset: the "
                        "cores split between the replicas)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-routing", action="store_true")
    args = parser.parse_args()

    runs = [] if args.skip_throughput else [
        throughput(*_config(text), args.streams, args.rounds, args.tokens)
        for text in args.configs.split(",")]
    if runs:
        print_table(f"{args.streams} concurrent streams, {args.tokens} tokens each",
                    ["replicas", "slots each", "threads", "requests", "tokens/s", "TTFT p50 ms", "latency p50 ms",
                     "latency p99 ms", "served by"],
                    [[r["replicas"], r["parallel"], r["threads"], r["requests"], r["tokens_per_s"], r["ttft"]["p50"],
                      r["latency"]["p50"], r["latency"]["p99"], r["served_by"]] for r in runs])
    routed = {} if args.skip_routing else routing(args.conversations, args.turns, args.seed)
    if routed:
        print_table(f"{args.conversations} conversations, {args.turns} follow-up turns each",
                    ["strategy", "follow-up TTFT p50 ms", "mean ms", "first round p50 ms",
                     "same replica as last turn"],
                    [[name, r["follow_up_ttft"]["p50"], r["follow_up_ttft"]["mean"],
                      r["first_round_ttft"]["p50"], r["same_replica_share"]]
                     for name, r in routed.items()])
    print(write_result("replicas", {"throughput": runs, "routing": routed, "args": vars(args)}))


if __name__ == "__main__":
    main()
