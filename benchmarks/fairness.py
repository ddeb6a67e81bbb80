#!/usr/bin/env python
"""Keys sharing one model: the noisy neighbour, and fair share between unequal keys.

The default GGUF chat model (SmolLM2-135M Q4_1) with 2 slots behind a gateway with virtual
keys; every answer is exactly its max_tokens long (temperature 0, ignore_eos).

1. Noisy neighbour: key A keeps --flood long requests (--a-tokens) in flight; key B sends
   --probes short streamed requests one at a time. Reports B's time to first token alone
   and under the flood (p50/p99), and A's answers per second with exactly 2 in flight vs
   under its own flood (B idle): what the queue costs a lone busy key.
2. Fair share: 4 keys keep --depth streamed requests each in flight for --seconds, asking
   for 16, 32, 64 and 128 tokens per request; reports each key's tokens (prompt + streamed
   answer) served inside the window and Jain's index over them (1.0: equal shares).

`--reserved-slots N` also runs it with N of the 2 slots held back, `--lane-slots N` with N
slots added beyond the 2 for keys below their share (the lane for people).
`--without-scheduler SRC` runs the same against the modelport source tree at SRC (e.g. a
`git worktree` of the commit before the scheduler), whose gateway sends everything to the
worker's own first-come queue, and reports both.

First, in-process: what the scheduler adds to a request that finds a free slot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import SMOLLM2, ServeProcess, percentile, print_table, write_result  # noqa: E402
from support.neighbours import (  # noqa: E402
    Flood,
    chat_body,
    client,
    closed_loop_rate,
    complete_s,
    first_token_s,
    median,
)

MASTER = "mk-bench-master-key-0123456789"
MODEL = "shared"
FAIR_TOKENS = (16, 32, 64, 128)
FAIR_PROMPT = "Say hello."


def admission_cost_us(rounds: int = 50_000) -> float:
    """Microseconds the scheduler adds to a request that finds a free slot and no queue:
    its ticket (key, class, expected tokens), taking the slot, the queue-ms header check
    and giving the slot back, in-process (median of 7 runs)."""
    from starlette.datastructures import Headers

    from modelport.api.queueing import ticket_for
    from modelport.config import parse_config
    from modelport.routing.deployments import Deployment, DeploymentStatus
    from modelport.admission.model_queue import queue_ms

    config = parse_config({"models": [{"name": "zero", "engine": "openai",
                                       "base_url": "http://127.0.0.1:9/v1"}]})
    deployment = Deployment(config.models[0], "http://127.0.0.1:9/v1", 10,
                            status=DeploymentStatus.READY)
    body = {"model": "zero", "max_tokens": 20,
            "messages": [{"role": "user", "content": "Hello! What is your name?"}]}
    headers = Headers(raw=[(b"content-type", b"application/json"),
                           (b"authorization", b"Bearer sk-x")])

    def once() -> None:
        ticket = ticket_for(headers, None, body, 20)
        deployment.queue.try_take(ticket)
        queue_ms(ticket)
        deployment.queue.give_back(ticket, 30)

    runs = []
    for _ in range(8):
        started = time.perf_counter()
        for _ in range(rounds):
            once()
        runs.append((time.perf_counter() - started) / rounds * 1e6)
    return round(median(runs[1:]), 2)  # the first run warms up


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 0.0


def start_gateway(source: str | None, workdir: Path, reserved: int = 0,
                  lane: int = 0) -> ServeProcess:
    # A tree without the scheduler knows none of these (nor needs them: its worker queues).
    queue = {} if source else {"queue_timeout_s": 900, "reserved_slots": reserved}
    if lane:
        queue["lane_slots"] = lane
    server = ServeProcess(
        [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "threads": 2,
          "context_length": 2048, "parallel": 2, "max_queue": 128, **queue}],
        server={"master_key": MASTER, "data_dir": str(workdir)}, workdir=workdir)
    before = os.environ.get("PYTHONPATH")
    if source:
        os.environ["PYTHONPATH"] = str(Path(source) / "src")
    try:
        server.start()
    finally:
        if source:
            os.environ.pop("PYTHONPATH") if before is None else \
                os.environ.__setitem__("PYTHONPATH", before)
    return server


def new_key(server: ServeProcess, name: str) -> str:
    response = httpx.post(server.url + "/admin/keys", timeout=30, json={"name": name},
                          headers={"Authorization": f"Bearer {MASTER}"})
    response.raise_for_status()
    return response.json()["key"]


async def noisy_neighbour(server: ServeProcess, args) -> dict:
    base = server.url + "/v1"
    a_body, b_body = chat_body(MODEL, args.a_tokens), chat_body(MODEL, 8)
    async with client(base, new_key(server, "A")) as a, client(base, new_key(server, "B")) as b:
        await complete_s(a, a_body)
        a_alone = median([await complete_s(a, a_body) for _ in range(3)])
        b_alone = [(await first_token_s(b, b_body))[0] for _ in range(args.probes)]
        two = await closed_loop_rate(a, a_body, depth=2, answers=8)
        flood = Flood(a, a_body, depth=args.flood).start()
        try:
            flooded = await flood.rate(answers=8)
            b_flooded, b_failed, b_queued = [], [], []
            for _ in range(args.probes):
                try:
                    seconds, headers = await first_token_s(b, b_body)
                    b_flooded.append(seconds)
                    b_queued.append(int(headers.get("x-modelport-queue-ms", 0)))
                except AssertionError as refused:  # a refusal or an unhealthy worker
                    b_failed.append(str(refused)[:200])
        finally:
            await flood.stop()
    return {"a_alone_s": round(a_alone, 3), "a_rate_two_in_flight": round(two, 3),
            "a_rate_flood": round(flooded, 3),
            "b_ttft_alone_ms": _p(b_alone), "b_ttft_flooded_ms": _p(b_flooded),
            "b_queue_ms": b_queued,
            "b_failed": b_failed, "a_failed": flood.failures[:5],
            "a_failures": len(flood.failures)}


async def fair_share(server: ServeProcess, args) -> dict:
    """Tokens each key was served inside the window: its prompts' tokens when their
    first event came, then one per streamed token (answers cut by the window's end count
    for what they streamed, so long requests are not undercounted)."""
    base = server.url + "/v1"
    served: dict[int, int] = dict.fromkeys(FAIR_TOKENS, 0)
    clients = [client(base, new_key(server, f"k{t}")) for t in FAIR_TOKENS]
    probe = await clients[0].post("/chat/completions", json=chat_body(
        MODEL, 1, prompt=FAIR_PROMPT, stream=False))
    prompt_tokens = probe.json()["usage"]["prompt_tokens"]
    end = time.perf_counter() + args.seconds

    async def key_loop(http: httpx.AsyncClient, tokens: int) -> None:
        body = chat_body(MODEL, tokens, prompt=FAIR_PROMPT, stream=True)
        while True:
            async with http.stream("POST", "/chat/completions", json=body) as response:
                first = True
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or '"content":"' not in line:
                        continue
                    if time.perf_counter() >= end:
                        return
                    served[tokens] += prompt_tokens + 1 if first else 1
                    first = False

    loops = [asyncio.ensure_future(key_loop(http, tokens))
             for http, tokens in zip(clients, FAIR_TOKENS) for _ in range(args.depth)]
    try:
        # The requests still queued at the window's end are dropped.
        await asyncio.wait(loops, timeout=args.seconds)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for http in clients:
            await http.aclose()
    return {"tokens_by_key": {str(t): served[t] for t in FAIR_TOKENS},
            "prompt_tokens": prompt_tokens, "jain": round(jain(list(served.values())), 3)}


def _p(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50) * 1000, 1),
            "p99": round(percentile(values, 99) * 1000, 1)}


def run(label: str, source: str | None, args, reserved: int = 0, lane: int = 0) -> dict:
    workdir = Path(args.workdir) / label
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_gateway(source, workdir, reserved, lane)
    try:
        result = {"noisy": asyncio.run(noisy_neighbour(server, args)),
                  "fair": asyncio.run(fair_share(server, args))}
    finally:
        server.stop()
    print(label, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=32, help="A's requests in flight")
    parser.add_argument("--a-tokens", type=int, default=32, help="tokens of each of A's")
    parser.add_argument("--probes", type=int, default=8, help="B's requests, each phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="fair-share window")
    parser.add_argument("--depth", type=int, default=4, help="each key's requests in flight, "
                        "fair share")
    parser.add_argument("--without-scheduler", metavar="SRC",
                        help="also run a modelport tree without the scheduler")
    parser.add_argument("--reserved-slots", type=int, default=0,
                        help="also run with this many reserved slots")
    parser.add_argument("--lane-slots", type=int, default=0,
                        help="also run with this many lane slots beyond the 2")
    parser.add_argument("--workdir", default="/tmp/modelport-fairness")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    hot_path_us = admission_cost_us()
    print(f"scheduler cost of a request with a free slot and no queue: {hot_path_us} us")
    results = {"with fair share": run("with", None, args)}
    if args.reserved_slots:
        results[f"with fair share, reserved_slots {args.reserved_slots}"] = run(
            "reserved", None, args, args.reserved_slots)
    if args.lane_slots:
        results[f"with fair share, lane_slots {args.lane_slots}"] = run(
            "lane", None, args, lane=args.lane_slots)
    if args.without_scheduler:
        results["without (first come)"] = run("without", args.without_scheduler, args)
    rows = []
    for label, result in results.items():
        noisy, fair = result["noisy"], result["fair"]
        rows.append([label, noisy["b_ttft_alone_ms"]["p50"], noisy["b_ttft_flooded_ms"]["p50"],
                     noisy["b_ttft_flooded_ms"]["p99"],
                     f'{len(noisy["b_failed"])} / {noisy["a_failures"]}', noisy["a_alone_s"],
                     noisy["a_rate_two_in_flight"], noisy["a_rate_flood"],
                     " / ".join(str(v) for v in fair["tokens_by_key"].values()), fair["jain"]])
    print_table("noisy neighbour and fair share", [
        "gateway", "B TTFT alone p50 ms", "B TTFT flooded p50 ms", "p99 ms",
        "refused B / A", "A alone s",
        "A 2 in flight /s", "A flood /s", "tokens by key (16/32/64/128)", "Jain"], rows)
    load = (load_before, os.getloadavg()[0])
    print(f"load average before/after: {load[0]:.1f} / {load[1]:.1f}")
    path = write_result("fairness", {"results": results, "hot_path_us": hot_path_us,
                                     "load": load, "args": vars(args)})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
