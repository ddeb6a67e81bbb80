#!/usr/bin/env python
"""Gateway resident memory over many requests: RSS after the first 1,000 and after 10,000.

Mixed traffic against a zero-delay upstream through modelport: non-streaming, streaming,
invalid bodies (400) and unknown models (404). Growth beyond a few percent would mean
something is kept per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, print_table, write_result  # noqa: E402
from gateway_overhead import BODY, STREAM_BODY, start_zero_upstream  # noqa: E402

MIX = [(BODY, 200), (STREAM_BODY, 200), ({"model": "zero", "messages": []}, 400),
       ({**BODY, "model": "no-such-model"}, 404)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def send(url: str, count: int, concurrency: int) -> int:
    unexpected = 0
    queue = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal unexpected
        for index in queue:
            body, status = MIX[index % len(MIX)]
            async with session.post(url, json=body) as response:
                await response.read()
                unexpected += response.status != status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return unexpected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    upstream_process, upstream = start_zero_upstream(20)
    serve = ServeProcess([{"name": "zero", "engine": "openai", "base_url": upstream,
                           "max_concurrency": 1024}]).start()
    url = serve.url + "/v1/chat/completions"
    try:
        pid = serve.process.pid  # type: ignore[union-attr]
        start_rss = rss_kib(pid)
        unexpected = asyncio.run(send(url, args.first, args.concurrency))
        first_rss = rss_kib(pid)
        unexpected += asyncio.run(send(url, args.total - args.first, args.concurrency))
        final_rss = rss_kib(pid)
    finally:
        serve.stop()
        upstream_process.terminate()
    growth = (final_rss - first_rss) / first_rss
    report = {"settings": vars(args), "rss_kib": {"start": start_rss, "after_first": first_rss,
                                                  "after_total": final_rss},
              "growth_after_first": round(growth, 4), "unexpected_statuses": unexpected}
    print_table("gateway RSS", ["point", "requests", "RSS MiB"], [
        ["start", 0, round(start_rss / 1024, 1)],
        ["after first", args.first, round(first_rss / 1024, 1)],
        ["after total", args.total, round(final_rss / 1024, 1)]])
    print(f"growth after the first {args.first}: {growth:.2%}; unexpected statuses: {unexpected}")
    print(f"\nwritten: {write_result('gateway_memory', report)}")


if __name__ == "__main__":
    main()
