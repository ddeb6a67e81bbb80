#!/usr/bin/env python
"""Gateway CPU per request, measured with `wrk` (apt-get install wrk).

One gateway process on a core of its own (every thread pinned to the first CPU), in front
of the zero-delay upstream; `wrk` and the upstream share the other CPUs, so the gateway
is the bottleneck and its own CPU time (user + system of its process over the run,
divided by the requests wrk completed) is what a request costs it. Keys, usage rows and
metrics are on (a virtual key without limits, a usage row per request, /metrics served),
as teams run it. Each mode (a non-streaming answer; a stream of --chunks events) runs
--repeats times; the table gives the median.

--processes N serves with `server.processes: N` (virtual keys then need --redis-url, a
running redis-server): the gateway processes are not pinned (there is no spare core for
them on a small machine), their CPU is added up, and the connections each one holds are
counted in the middle of every run (the kernel spreads them over the processes).

Usage: .venv/bin/python benchmarks/gateway_cpu.py [--connections 64] [--seconds 5]
       [--processes 2 --redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, ServeProcess, print_table, write_result  # noqa: E402
from gateway_overhead import BODY, STREAM_BODY, start_zero_upstream  # noqa: E402
from teams_overhead import MASTER, cpu_seconds, pin_every_thread  # noqa: E402

_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def wrk_script(body: dict, key: str) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"gateway-cpu-{'stream' if body.get('stream') else 'plain'}.lua"
    # A JSON string is a valid Lua string literal for this ASCII body.
    path.write_text(_LUA.format(body=orjson.dumps(orjson.dumps(body).decode()).decode(), key=key))
    return path


def connections_held(gateways: list[psutil.Process], port: int) -> list[int]:
    return [sum(1 for c in g.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)
            for g in gateways]


def serving_processes(primary: psutil.Process, count: int, port: int,
                      timeout_s: float = 60) -> list[psutil.Process]:
    """The primary and its followers once each listens on the port: the primary answers
    ready before its followers have started, and connections made before a follower
    listens all stay with the primary."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        processes = [primary, *(child for child in primary.children()
                                if "serve" in child.cmdline())]
        listening = [p for p in processes if any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port
            for c in p.net_connections(kind="tcp"))]
        if len(listening) == count:
            return listening
        time.sleep(0.2)
    raise TimeoutError(f"not all {count} gateway processes listen on {port}")


def run_wrk(url: str, script: Path, connections: int, seconds: int,
            gateways: list[psutil.Process], port: int) -> dict:
    before = sum(cpu_seconds(g) for g in gateways)
    held: list[int] = []
    sampler = threading.Timer(seconds / 2, lambda: held.extend(connections_held(gateways, port)))
    sampler.start()
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60)
    sampler.join()
    used = sum(cpu_seconds(g) for g in gateways) - before
    requests = int(re.search(r"(\d+) requests in", result.stdout).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    errors = re.search(r"Socket errors: (.*)", result.stdout)
    return {"requests": requests,
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1)),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "",
            "connections_per_process": held,
            "gateway_cpu_ms_per_request": round(used * 1000 / max(1, requests), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=20, help="events in a streamed answer")
    parser.add_argument("--processes", type=int, default=1, help="server.processes")
    parser.add_argument("--redis-url", help="server.redis_url (needed with --processes > 1)")
    args = parser.parse_args()
    # A stop signal unwinds through the finally below, which stops the upstream and gateway.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["MODELPORT_DATA_DIR"] = tempfile.mkdtemp(prefix="modelport-bench-")
    os.environ["BENCH_MASTER_KEY"] = MASTER
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, cores[1:])  # wrk and the upstream inherit this
    upstream_process, upstream = start_zero_upstream(args.chunks)
    model = [{"name": "zero", "engine": "openai", "base_url": upstream,
              "max_concurrency": 4096, "max_queue": 4096,
              "price": {"input": 0.1, "output": 0.2}}]
    server: dict = {"master_key": "${BENCH_MASTER_KEY}", "processes": args.processes}
    if args.redis_url:
        server["redis_url"] = args.redis_url
    gateway = ServeProcess(model, server)
    try:
        gateway.start(timeout=120)
    except BaseException:
        gateway.stop()
        upstream_process.terminate()
        raise
    primary = psutil.Process(gateway.process.pid)
    if args.processes == 1 and len(cores) > 1:
        pin_every_thread(gateway.process.pid, cores[:1])
    report: dict = {"settings": vars(args), "load_before": os.getloadavg(), "runs": []}
    try:
        key = httpx.post(gateway.url + "/admin/keys", json={"name": "bench"},
                         headers={"Authorization": f"Bearer {MASTER}"}).json()["key"]
        url = gateway.url + "/v1/chat/completions"
        scripts = {"non-streaming": wrk_script(BODY, key),
                   "streaming": wrk_script(STREAM_BODY, key)}
        processes = serving_processes(primary, args.processes, gateway.port)
        for mode, script in scripts.items():  # a short warm-up of each path
            run_wrk(url, script, args.connections, 1, processes, gateway.port)
        for repeat in range(args.repeats):
            for mode, script in scripts.items():
                result = run_wrk(url, script, args.connections, args.seconds, processes,
                                 gateway.port)
                report["runs"].append({"mode": mode, "repeat": repeat, **result})
        metrics = httpx.get(gateway.url + "/metrics").text
        report["metrics_scraped_bytes"] = len(metrics)
    finally:
        gateway.stop()
        upstream_process.terminate()
    report["load_after"] = os.getloadavg()
    rows = []
    for mode in ("non-streaming", "streaming"):
        runs = [r for r in report["runs"] if r["mode"] == mode]
        cpu = statistics.median(r["gateway_cpu_ms_per_request"] for r in runs)
        rps = statistics.median(r["rps"] for r in runs)
        report.setdefault("median", {})[mode] = {"gateway_cpu_ms_per_request": cpu, "rps": rps}
        rows.append([mode, args.connections, round(rps, 1), cpu,
                     " ".join(str(r["gateway_cpu_ms_per_request"]) for r in runs),
                     sum(r["non_2xx"] for r in runs),
                     " ".join("/".join(map(str, r["connections_per_process"])) for r in runs)])
    print_table(f"gateway CPU per request, processes: {args.processes} (keys + usage + metrics "
                f"on; load {report['load_before'][0]:.2f} before, "
                f"{report['load_after'][0]:.2f} after)",
                ["mode", "conns", "req/s", "CPU ms/req", "runs", "non-2xx",
                 "connections per process"], rows)
    print(f"\nwritten: {write_result('gateway_cpu', report)}")


if __name__ == "__main__":
    main()
