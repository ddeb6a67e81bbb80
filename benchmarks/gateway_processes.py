#!/usr/bin/env python
"""Gateway throughput with `server.processes: N`, in front of the zero-delay upstream.

Every configuration of --processes runs as its own `modelport serve` at the same time
(idle while another one is measured); each round measures them all, in an order that
alternates from round to round, so that drift on a shared machine hits each alike.
A measurement: --concurrency clients on kept-alive connections (spread over --clients
load-generator processes), looping for --seconds, non-streaming then streaming; reports
requests/s and latency p50/p99 per round and the median of the rounds.

On this 2-core machine:   python benchmarks/gateway_processes.py
On a 16-core machine:     python benchmarks/gateway_processes.py --processes 1,2,4,8 \\
                              --clients 4 --upstream-processes 4 --concurrency 256
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, percentile, print_table, write_result  # noqa: E402
from gateway_overhead import BODY, STREAM_BODY, load_samples, start_zero_upstream  # noqa: E402


def wait_serving(serve: ServeProcess, processes: int, timeout: float = 60) -> None:
    """Until every gateway process of `serve` listens (each logs its serving line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes == 1 or serve.log.read_text(errors="replace").count(
                f" of {processes})") >= processes:
            return
        time.sleep(0.1)
    raise TimeoutError(f"not every gateway process serving:\n{serve.log.read_text()[-3000:]}")


def _generate(job: tuple[str, dict, int, float]) -> tuple[list[float], int, float]:
    return asyncio.run(load_samples(*job))


def measure(pool: multiprocessing.pool.Pool, url: str, body: dict, concurrency: int,
            clients: int, seconds: float) -> dict:
    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    parts = pool.map(_generate, [(url, body, share, seconds) for share in shares])
    latencies = [value for part in parts for value in part[0]]
    elapsed = max(part[2] for part in parts)
    return {"requests": len(latencies), "errors": sum(part[1] for part in parts),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="server.processes values compared")
    parser.add_argument("--concurrency", type=int, default=64, help="clients in flight")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--upstream-processes", type=int, default=1,
                        help="processes of the zero upstream")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--chunks", type=int, default=20, help="events per streamed answer")
    args = parser.parse_args()
    counts = [int(v) for v in args.processes.split(",")]

    upstream_process, upstream = start_zero_upstream(args.chunks, args.upstream_processes)
    model = {"name": "zero", "engine": "openai", "base_url": upstream,
             "max_concurrency": 4096, "max_queue": 4096}
    servers = {n: ServeProcess([model], {"processes": n, "usage": False}) for n in counts}
    runs: dict[str, dict[int, list[dict]]] = {"non-streaming": {}, "streaming": {}}
    try:
        for count, serve in servers.items():
            serve.start()
            wait_serving(serve, count)
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            for round_index in range(args.rounds):
                order = counts if round_index % 2 == 0 else counts[::-1]
                for mode, body in (("non-streaming", BODY), ("streaming", STREAM_BODY)):
                    for count in order:
                        url = servers[count].url + "/v1/chat/completions"
                        measure(pool, url, body, args.concurrency, args.clients, 0.5)  # warm
                        result = measure(pool, url, body, args.concurrency, args.clients,
                                         args.seconds)
                        runs[mode].setdefault(count, []).append(result)
                        print(f"round {round_index + 1} {mode} processes={count}: "
                              f"{result['rps']} req/s, p50 {result['p50_ms']} ms", flush=True)
    finally:
        for serve in servers.values():
            serve.stop()
        upstream_process.terminate()

    rows = []
    for mode, by_count in runs.items():
        for count, results in by_count.items():
            rows.append([mode, count, " / ".join(str(r["rps"]) for r in results),
                         statistics.median(r["rps"] for r in results),
                         statistics.median(r["p50_ms"] for r in results),
                         statistics.median(r["p99_ms"] for r in results),
                         sum(r["errors"] for r in results)])
    print_table(f"gateway throughput at {args.concurrency} clients (median of {args.rounds} "
                "rounds)", ["mode", "processes", "req/s each round", "req/s", "p50 ms",
                            "p99 ms", "errors"], rows)
    print(f"\nwritten: {write_result('gateway_processes', {'settings': vars(args), 'runs': runs})}")


if __name__ == "__main__":
    main()
