#!/usr/bin/env python
"""What keys, limits, usage accounting and metrics cost the gateway.

Two gateways in front of the same zero-delay upstream:
- "off": no keys, /metrics off, no usage rows (server.metrics/usage false);
- "on": a virtual key with rpm/tpm/max_parallel/budget limits set high enough never to
  refuse, a usage row per request, /metrics on (scraped once a second during the load).
1. Added latency, one request at a time: interleaved rounds, off and on alternately,
   non-streaming and streaming; the difference of the p50s (and of paired samples).
2. Throughput at CONCURRENCY clients, off and on alternately (--repeats times each; the
   median is reported). With two or more cores the gateways share the first core and the
   load generator and upstream get the others. Beside req/s, each run records the
   gateway's own CPU time per request (user + system of its process over the run), which
   a busy machine disturbs far less than wall-clock throughput.
3. With --together, the same load phase runs on both gateways at once instead of one after
   the other: they share the first core and each gets about half of it, so whatever slows
   the machine slows both alike and each run is a paired comparison (req/s of "on" over
   req/s of "off" at the same moment). --aa configures "on" exactly like "off" (no key,
   no usage, no metrics): the spread of that control is the method's noise floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ServeProcess, percentile, print_table, summarize_ms, write_result  # noqa: E402
from gateway_overhead import BODY, STREAM_BODY, load, start_zero_upstream, timed_request  # noqa: E402

MASTER = "mk-benchmark-master-key-0123456789"
LIMITS = {"rpm": 10_000_000, "tpm": 2_000_000_000, "max_parallel": 100_000,
          "budget_tokens": 2_000_000_000, "budget_period": "month"}


async def interleaved(urls: dict[str, str], headers: dict[str, dict], rounds: int) -> dict:
    results: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for label, body in (("non-streaming", BODY), ("streaming", STREAM_BODY)):
            samples: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(20):
                for name, url in urls.items():
                    await timed_request(session, url, body, headers[name])
            for index in range(rounds):
                order = list(urls.items())
                for name, url in (order if index % 2 == 0 else order[::-1]):
                    samples[name].append((await timed_request(session, url, body,
                                                              headers[name]))[1])
            entry = {name: summarize_ms(values) for name, values in samples.items()}
            entry["added_p50_ms"] = round(entry["on"]["p50"] - entry["off"]["p50"], 3)
            paired = sorted((on - off) * 1000 for off, on in zip(samples["off"], samples["on"]))
            entry["paired_added_p50_ms"] = round(percentile(paired, 50), 3)
            results[label] = entry
    return results


async def scrape_while(url: str, stop: asyncio.Event) -> int:
    scrapes = 0
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            await client.get(url)
            scrapes += 1
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    return scrapes


def pin_every_thread(pid: int, cores: list[int]) -> None:
    """All of the process's threads (and the ones they start later) on `cores`: setting
    the process's own PID moves its main thread only, and a thread started before (a
    database driver's, say) would go on running on the load generator's core."""
    for thread in psutil.Process(pid).threads():
        os.sched_setaffinity(thread.id, cores)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def load_with_scrapes(url: str, body: dict, level: int, seconds: float,
                            headers: dict, metrics_url: str | None,
                            gateway: psutil.Process) -> dict:
    stop = asyncio.Event()
    scraper = asyncio.ensure_future(scrape_while(metrics_url, stop)) if metrics_url else None
    cpu_before = cpu_seconds(gateway)
    try:
        result = await load(url, body, level, seconds, headers)
    finally:
        stop.set()
        if scraper:
            await scraper
    cpu = cpu_seconds(gateway) - cpu_before
    result["gateway_cpu_us_per_request"] = round(cpu / max(1, result["requests"]) * 1e6, 1)
    return result


async def load_both(urls: dict[str, str], body: dict, level: int, seconds: float,
                    headers: dict[str, dict], metrics: dict[str, str | None],
                    processes: dict[str, psutil.Process]) -> dict[str, dict]:
    """Both gateways under `level` clients each at the same time."""
    names = list(urls)
    results = await asyncio.gather(*(load_with_scrapes(
        urls[name], body, level, seconds, headers[name], metrics[name], processes[name])
        for name in names))
    return dict(zip(names, results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the load phase")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--together", action="store_true",
                        help="load both gateways at once (paired runs) instead of in turn")
    parser.add_argument("--key-limits", choices=("all", "none"), default="all",
                        help='"all": the key has rpm, tpm, max_parallel and a budget (every '
                             'answer carries the six rate-limit headers); "none": a key '
                             'without limits')
    parser.add_argument("--aa", action="store_true",
                        help='control: "on" configured like "off" (the noise floor)')
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="modelport-bench-")
    os.environ["MODELPORT_DATA_DIR"] = data_dir
    os.environ["BENCH_MASTER_KEY"] = MASTER
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        # The gateways get a core of their own and everything else (this load generator,
        # the upstream) the rest, so each gateway's own cost decides its throughput.
        os.sched_setaffinity(0, cores[1:])
    upstream_process, upstream = start_zero_upstream(args.chunks)
    model = [{"name": "zero", "engine": "openai", "base_url": upstream,
              "max_concurrency": 4096, "max_queue": 4096,
              "price": {"input": 0.1, "output": 0.2}}]
    off_server = {"metrics": False, "usage": False}
    off = ServeProcess(model, off_server).start()
    on = ServeProcess(model, off_server if args.aa else {"master_key": "${BENCH_MASTER_KEY}"}).start()
    if len(cores) > 1:
        for gateway in (off, on):
            pin_every_thread(gateway.process.pid, cores[:1])
    try:
        urls = {"off": off.url + "/v1/chat/completions", "on": on.url + "/v1/chat/completions"}
        headers: dict[str, dict] = {"off": {}, "on": {}}
        if not args.aa:
            limits = LIMITS if args.key_limits == "all" else {}
            created = httpx.post(on.url + "/admin/keys", json={"name": "bench", **limits},
                                 headers={"Authorization": f"Bearer {MASTER}"}).json()
            headers["on"] = {"Authorization": f"Bearer {created['key']}"}
        metrics_urls = {"off": None, "on": None if args.aa else on.url + "/metrics"}
        processes = {"off": psutil.Process(off.process.pid), "on": psutil.Process(on.process.pid)}
        report: dict = {"settings": vars(args),
                        "latency": asyncio.run(interleaved(urls, headers, args.rounds)),
                        "load": []}
        for repeat in range(args.repeats):
            for label, body in (("non-streaming", BODY), ("streaming", STREAM_BODY)):
                if args.together:
                    both = asyncio.run(load_both(urls, body, args.concurrency, args.seconds,
                                                 headers, metrics_urls, processes))
                    for name, result in both.items():
                        report["load"].append({"gateway": name, "mode": label,
                                               "repeat": repeat, **result})
                    continue
                for name in (("off", "on") if repeat % 2 == 0 else ("on", "off")):
                    result = asyncio.run(load_with_scrapes(
                        urls[name], body, args.concurrency, args.seconds, headers[name],
                        metrics_urls[name], processes[name]))
                    report["load"].append({"gateway": name, "mode": label, **result})
        report["usage_rows_written"] = 0
        if not args.aa:
            time.sleep(2)  # the last usage batch
            usage = httpx.get(on.url + "/admin/usage?group_by=key",
                              headers={"Authorization": f"Bearer {MASTER}"}).json()["data"]
            report["usage_rows_written"] = sum(row["requests"] for row in usage)
    finally:
        off.stop()
        on.stop()
        upstream_process.terminate()

    rows = [[label, entry["off"]["p50"], entry["on"]["p50"], entry["added_p50_ms"],
             entry["paired_added_p50_ms"], entry["off"]["p99"], entry["on"]["p99"]]
            for label, entry in report["latency"].items()]
    print_table("one request at a time (ms)", ["mode", "off p50", "on p50", "added p50",
                                                "paired added p50", "off p99", "on p99"], rows)
    totals: dict = {}
    cpu: dict = {}
    for r in report["load"]:
        totals.setdefault((r["mode"], r["gateway"]), []).append(r["rps"])
        cpu.setdefault((r["mode"], r["gateway"]), []).append(r["gateway_cpu_us_per_request"])
    rows = []
    for mode in ("non-streaming", "streaming"):
        off_rps = statistics.median(totals[(mode, "off")])
        on_rps = statistics.median(totals[(mode, "on")])
        off_cpu = statistics.median(cpu[(mode, "off")])
        on_cpu = statistics.median(cpu[(mode, "on")])
        rows.append([mode, args.concurrency, round(off_rps, 1), round(on_rps, 1),
                     f"{(on_rps / off_rps - 1) * 100:+.1f}%", off_cpu, on_cpu,
                     f"{(off_cpu / on_cpu - 1) * 100:+.1f}%"])
        report.setdefault("throughput", {})[mode] = {
            "off_rps": off_rps, "on_rps": on_rps,
            "off_cpu_us_per_request": off_cpu, "on_cpu_us_per_request": on_cpu}
        if args.together:  # each repeat is a pair measured at the same moment
            pairs = [on / off - 1 for off, on in zip(totals[(mode, "off")], totals[(mode, "on")])]
            report["throughput"][mode]["paired_changes"] = [round(p, 4) for p in pairs]
            print(f"{mode}: paired req/s changes {', '.join(f'{p:+.1%}' for p in pairs)}; "
                  f"median {statistics.median(pairs):+.1%}")
    print_table("throughput (median of the runs)",
                ["mode", "conc", "off req/s", "on req/s", "change", "off CPU us/req",
                 "on CPU us/req", "CPU-bound change"], rows)
    print(f"usage rows written: {report['usage_rows_written']}")
    print(f"\nwritten: {write_result('teams_overhead', report)}")


if __name__ == "__main__":
    main()
