#!/usr/bin/env python
"""What a request with tools costs compared with a plain chat request.

1. The gateway's own work, in-process and without a model: validating a body with tools
   against one without, building the forced-call body of `tool_choice: required`, and
   turning a llama.cpp stream's content into tool-call deltas, per event, against relaying
   the same events unchanged.
2. End to end through `modelport serve` with the default GGUF model (chatml-tools):
   interleaved rounds of the same question, same max_tokens, temperature 0: plain, with
   tools and tool_choice auto, and with tool_choice required (forced by the grammar);
   p50/p99 latency with the prompt and completion tokens each spent.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, ServeProcess, print_table, summarize_ms, write_result  # noqa: E402

from modelport.protocol import ChatCompletionRequest, validate_request  # noqa: E402
from modelport.providers.forced_tools import as_tool_calls, forced_body  # noqa: E402
from modelport.tools.support import HERMES  # noqa: E402

MODEL = "smollm2"
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"{name} of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}} for name in ("get_weather", "get_time")]


def _per_call_us(function, repeat: int) -> float:
    for _ in range(max(1, repeat // 10)):  # warm-up: imports, caches, the allocator
        function()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1e6


def _worker_stream() -> list[bytes]:
    """A llama.cpp stream of a forced call, one token per event (as the worker sends it)."""
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
              for p in pieces]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


async def _drain(events) -> int:
    count = 0
    async for _ in events:
        count += 1
    return count


async def _iterate(items):
    for item in items:
        yield item


def gateway_costs(repeat: int) -> dict[str, float]:
    plain = {"model": MODEL, "messages": QUESTION, "max_tokens": 32}
    with_tools = {**plain, "tools": TOOLS, "tool_choice": "required"}
    stream = _worker_stream()
    loop = asyncio.new_event_loop()
    rewrite_us = _per_call_us(lambda: loop.run_until_complete(_drain(as_tool_calls(
        _iterate(stream), ["get_weather", "get_time"]))), repeat // 10)
    relay_us = _per_call_us(lambda: loop.run_until_complete(_drain(_iterate(stream))),
                            repeat // 10)
    loop.close()
    return {
        "validate_plain_us": _per_call_us(
            lambda: validate_request(ChatCompletionRequest, plain), repeat),
        "validate_tools_us": _per_call_us(
            lambda: validate_request(ChatCompletionRequest, with_tools), repeat),
        "forced_body_us": _per_call_us(
            lambda: forced_body(with_tools, ["get_weather", "get_time"], HERMES), repeat),
        "stream_events": len(stream),
        "stream_rewrite_us": rewrite_us,
        "stream_passthrough_us": relay_us,
    }


async def _timed(session, url: str, body: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    async with session.post(url, json=body) as response:
        payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload}")
    return time.perf_counter() - started, payload


async def end_to_end(url: str, rounds: int, max_tokens: int) -> dict[str, dict]:
    import aiohttp

    base = {"model": MODEL, "messages": QUESTION, "max_tokens": max_tokens, "temperature": 0}
    kinds = {"plain": base, "tools_auto": {**base, "tools": TOOLS, "tool_choice": "auto"},
             "tools_required": {**base, "tools": TOOLS, "tool_choice": "required"}}
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    tokens: dict[str, list[tuple[int, int]]] = {kind: [] for kind in kinds}
    calls: dict[str, int] = {kind: 0 for kind in kinds}
    finishes: dict[str, dict[str, int]] = {kind: {} for kind in kinds}
    async with aiohttp.ClientSession() as session:
        for kind, body in kinds.items():  # warm-up: llama.cpp's prompt cache, connections
            await _timed(session, url, body)
        for _ in range(rounds):
            for kind, body in kinds.items():  # interleaved, so drift hits every kind alike
                elapsed, payload = await _timed(session, url, body)
                samples[kind].append(elapsed)
                usage = payload["usage"]
                tokens[kind].append((usage["prompt_tokens"], usage["completion_tokens"]))
                calls[kind] += bool(payload["choices"][0]["message"].get("tool_calls"))
                reason = payload["choices"][0]["finish_reason"]
                finishes[kind][reason] = finishes[kind].get(reason, 0) + 1
    return {kind: {**summarize_ms(samples[kind]),
                   "prompt_tokens": round(statistics.fmean(t[0] for t in tokens[kind]), 1),
                   "completion_tokens": round(statistics.fmean(t[1] for t in tokens[kind]), 1),
                   "answers_with_a_call": f"{calls[kind]}/{rounds}",
                   "finish_reasons": finishes[kind]}
            for kind in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=20000, help="in-process repetitions")
    args = parser.parse_args()

    costs = gateway_costs(args.repeat)
    print_table("gateway work per request (in-process, no model)", ["step", "us"],
                [[key, round(value, 2)] for key, value in costs.items()])
    server = ServeProcess([{"name": "smollm2-135m-instruct", "aliases": [MODEL],
                            "engine": "llamacpp", "path": SMOLLM2, "context_length": 2048,
                            "parallel": 1, "chat_template": "chatml-tools"}]).start()
    try:
        results = asyncio.run(end_to_end(server.url + "/v1/chat/completions", args.rounds,
                                         args.max_tokens))
    finally:
        server.stop()
    print_table(f"end to end, max_tokens {args.max_tokens}, {args.rounds} rounds",
                ["request", "p50 ms", "p99 ms", "prompt tok", "completion tok", "calls",
                 "finish"],
                [[kind, r["p50"], r["p99"], r["prompt_tokens"], r["completion_tokens"],
                  r["answers_with_a_call"], r["finish_reasons"]] for kind, r in results.items()])
    path = write_result("tool_calls", {"gateway_us": costs, "end_to_end": results,
                                       "rounds": args.rounds, "max_tokens": args.max_tokens})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
