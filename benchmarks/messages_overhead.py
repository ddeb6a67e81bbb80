#!/usr/bin/env python
"""What serving Anthropic's Messages API costs over serving OpenAI chat, on one gateway.

The same conversation is asked, one request at a time in interleaved rounds, as
POST /v1/chat/completions and as POST /v1/messages of one modelport in front of a
zero-delay OpenAI upstream (benchmarks/zero_upstream.py), streaming and not. The difference
is the translation both ways (request, answer or every stream event) and the chat bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, percentile, print_table, summarize_ms, write_result  # noqa: E402
from gateway_overhead import start_zero_upstream, timed_request  # noqa: E402

QUESTION = [{"role": "user", "content": "Hello! What is your name?"}]
CHAT = {"model": "zero", "messages": QUESTION, "max_tokens": 20}
MESSAGES = {"model": "zero", "messages": QUESTION, "max_tokens": 20}


async def compare(base: str, rounds: int) -> dict:
    results: dict = {}
    routes = {"chat": base + "/v1/chat/completions", "messages": base + "/v1/messages"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for label, stream in (("non-streaming", False), ("streaming", True)):
            bodies = {"chat": {**CHAT, "stream": stream}, "messages": {**MESSAGES, "stream": stream}}
            samples: dict[str, list[tuple[float, float]]] = {"chat": [], "messages": []}
            for _ in range(20):  # warm-up
                for name in routes:
                    await timed_request(session, routes[name], bodies[name])
            for index in range(rounds):
                order = ["chat", "messages"] if index % 2 == 0 else ["messages", "chat"]
                for name in order:
                    samples[name].append(await timed_request(session, routes[name], bodies[name]))
            entry = {name: {"ttfb_ms": summarize_ms([v[0] for v in values]),
                            "total_ms": summarize_ms([v[1] for v in values])}
                     for name, values in samples.items()}
            paired = sorted((m[1] - c[1]) * 1000
                            for c, m in zip(samples["chat"], samples["messages"]))
            entry["paired_added_ms"] = {"p50": round(percentile(paired, 50), 3),
                                        "p99": round(percentile(paired, 99), 3)}
            results[label] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=500, help="interleaved rounds")
    parser.add_argument("--chunks", type=int, default=20, help="events per streamed answer")
    args = parser.parse_args()
    upstream_process, upstream = start_zero_upstream(args.chunks)
    serve = ServeProcess([{"name": "zero", "engine": "openai", "base_url": upstream,
                           "max_concurrency": 64, "max_queue": 64}])
    serve.start()
    try:
        report = {"settings": vars(args), "results": asyncio.run(compare(serve.url, args.rounds))}
    finally:
        serve.stop()
        upstream_process.terminate()
    rows = []
    for label, entry in report["results"].items():
        for name in ("chat", "messages"):
            rows.append([label, name, entry[name]["ttfb_ms"]["p50"], entry[name]["total_ms"]["p50"],
                         entry[name]["total_ms"]["p99"]])
        rows.append([label, "added (messages - chat), paired", "",
                     entry["paired_added_ms"]["p50"], entry["paired_added_ms"]["p99"]])
    print_table("one request at a time (ms)",
                ["mode", "route", "ttfb p50", "total p50", "total p99"], rows)
    print(f"\nwritten: {write_result('messages_overhead', report)}")


if __name__ == "__main__":
    main()
