#!/usr/bin/env python
"""Latency and throughput the gateway adds in front of a zero-delay OpenAI upstream.

1. Added latency, one request at a time: interleaved rounds of the same request sent
   directly to the upstream and through modelport (streaming and not); reports p50/p99
   end-to-end and time-to-first-byte of each, and the difference (gateway minus direct).
2. Under load: CONCURRENCY clients loop for --seconds each, directly, through modelport,
   and through LiteLLM's proxy when --with-litellm (installed into a side venv); reports
   requests/s, p50/p99 latency and errors.

`--redis-url` gives the gateway a server.redis_url (routing state shared in Redis);
`--remote-replicas` serves "zero" as a local model with no worker of its own and two
`deployments:` at the zero upstream (127.0.0.1 and localhost), the path of remote
workers: least_busy over two replicas, watched for stalls, shared with --redis-url.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    OUT_DIR, ServeProcess, free_port, percentile, print_table, summarize_ms, write_result,
)

HERE = Path(__file__).resolve().parent
BODY = {"model": "zero", "messages": [{"role": "user", "content": "Hello! What is your name?"}],
        "max_tokens": 20}
STREAM_BODY = {**BODY, "stream": True}


def start_zero_upstream(chunks: int, processes: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "zero_upstream.py"), "--port", str(port),
                                "--chunks", str(chunks), "--processes", str(processes)],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    for _ in range(processes):
        process.stdout.readline()  # printed once listening, by each process
    return process, f"http://127.0.0.1:{port}/v1"


LITELLM_KEY = "sk-modelport-benchmark"


async def timed_request(session: aiohttp.ClientSession, url: str, body: dict,
                        headers: dict[str, str] | None = None) -> tuple[float, float]:
    """(time to first body byte, total time) of one request, read to the end."""
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        first = None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    end = time.perf_counter()
    return (first or end) - started, end - started


async def added_latency(direct: str, gateway: str, rounds: int) -> dict:
    results: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for label, body in (("non-streaming", BODY), ("streaming", STREAM_BODY)):
            samples: dict[str, list[tuple[float, float]]] = {"direct": [], "modelport": []}
            for _ in range(20):  # warm-up: connections, caches
                await timed_request(session, direct, body)
                await timed_request(session, gateway, body)
            for index in range(rounds):
                # Alternate which goes first so drift hits both sides alike.
                order = [("direct", direct), ("modelport", gateway)]
                for name, url in (order if index % 2 == 0 else order[::-1]):
                    samples[name].append(await timed_request(session, url, body))
            entry = {}
            for name, values in samples.items():
                entry[name] = {"ttfb_ms": summarize_ms([v[0] for v in values]),
                               "total_ms": summarize_ms([v[1] for v in values])}
            entry["added_ms"] = {
                q: round(entry["modelport"]["total_ms"][q] - entry["direct"]["total_ms"][q], 3)
                for q in ("p50", "p99")}
            paired = sorted((g[1] - d[1]) * 1000 for d, g in zip(samples["direct"], samples["modelport"]))
            entry["paired_added_ms"] = {"p50": round(percentile(paired, 50), 3),
                                        "p99": round(percentile(paired, 99), 3)}
            results[label] = entry
    return results


async def load(url: str, body: dict, concurrency: int, seconds: float,
               headers: dict[str, str] | None = None) -> dict:
    latencies, errors, elapsed = await load_samples(url, body, concurrency, seconds, headers)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "rps": round(len(latencies) / elapsed, 1), "latency_ms": summarize_ms(latencies)}


async def load_samples(url: str, body: dict, concurrency: int, seconds: float,
                       headers: dict[str, str] | None = None) -> tuple[list[float], int, float]:
    """`concurrency` clients looping for `seconds`: each request's latency, the errors and
    the time taken."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            try:
                latencies.append((await timed_request(session, url, body, headers))[1])
            except (aiohttp.ClientError, RuntimeError, asyncio.TimeoutError):
                errors += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def start_litellm(upstream: str) -> tuple[subprocess.Popen, str]:
    venv = OUT_DIR / "peer-litellm"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    config = OUT_DIR / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: zero\n    litellm_params:\n      model: openai/zero\n"
        f"      api_base: {upstream}\n      api_key: none\n")
    port = free_port()
    import os

    process = subprocess.Popen([str(venv / "bin" / "litellm"), "--config", str(config), "--port",
                                str(port), "--host", "127.0.0.1"],
                               env={**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY},
                               stdout=open(OUT_DIR / "litellm.log", "wb"), stderr=subprocess.STDOUT)
    import httpx

    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"LiteLLM exited; see {OUT_DIR / 'litellm.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=500, help="interleaved rounds, phase 1")
    parser.add_argument("--concurrency", default="1,16,64", help="levels, phase 2")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load level")
    parser.add_argument("--chunks", type=int, default=20, help="events per streamed answer")
    parser.add_argument("--with-litellm", action="store_true", help="also measure LiteLLM's proxy")
    parser.add_argument("--redis-url", help="server.redis_url of the gateway")
    parser.add_argument("--remote-replicas", action="store_true",
                        help="serve zero through two `deployments:` of a local model")
    args = parser.parse_args()
    upstream_process, upstream = start_zero_upstream(args.chunks)
    if args.remote_replicas:
        model = {"name": "zero", "engine": "llamacpp", "path": "zero.gguf", "replicas": 0,
                 "parallel": 256, "max_queue": 4096, "deployments": [
                     {"url": upstream}, {"url": upstream.replace("127.0.0.1", "localhost")}]}
    else:
        model = {"name": "zero", "engine": "openai", "base_url": upstream,
                 "max_concurrency": 4096, "max_queue": 4096}
    serve = ServeProcess([model], {"redis_url": args.redis_url} if args.redis_url else None)
    serve.start()
    direct = upstream + "/chat/completions"
    gateway = serve.url + "/v1/chat/completions"
    report: dict = {"settings": vars(args)}
    peers = {"direct": direct, "modelport": gateway}
    litellm_process = None
    try:
        report["added_latency"] = asyncio.run(added_latency(direct, gateway, args.rounds))
        if args.with_litellm:
            litellm_process, peers["litellm"] = start_litellm(upstream)
        report["load"] = {}
        for level in [int(v) for v in args.concurrency.split(",")]:
            for label, body in (("non-streaming", BODY), ("streaming", STREAM_BODY)):
                for name, url in peers.items():
                    headers = {"Authorization": f"Bearer {LITELLM_KEY}"} if name == "litellm" else None
                    result = asyncio.run(load(url, body, level, args.seconds, headers))
                    report["load"].setdefault(name, []).append({"mode": label, **result})
    finally:
        serve.stop()
        upstream_process.terminate()
        if litellm_process:
            litellm_process.terminate()

    rows = []
    for label, entry in report["added_latency"].items():
        for name in ("direct", "modelport"):
            rows.append([label, name, entry[name]["ttfb_ms"]["p50"], entry[name]["ttfb_ms"]["p99"],
                         entry[name]["total_ms"]["p50"], entry[name]["total_ms"]["p99"]])
        rows.append([label, "added (modelport - direct)", "", "", entry["added_ms"]["p50"],
                     entry["added_ms"]["p99"]])
    print_table("one request at a time (ms)",
                ["mode", "path", "ttfb p50", "ttfb p99", "total p50", "total p99"], rows)
    rows = []
    for name, results in report["load"].items():
        for r in results:
            rows.append([name, r["mode"], r["concurrency"], r["rps"], r["latency_ms"]["p50"],
                         r["latency_ms"]["p99"], r["errors"]])
    print_table("under load", ["path", "mode", "conc", "req/s", "p50 ms", "p99 ms", "errors"], rows)
    print(f"\nwritten: {write_result('gateway_overhead', report)}")


if __name__ == "__main__":
    main()
