#!/usr/bin/env python
"""Streaming throughput of the default GGUF chat model: modelport vs its engine's limit.

Targets compared in one run, one after another, with identical engine settings:
  in-process   llama.cpp's server loop called from this process (xllamacpp), no HTTP: the limit
  worker       the model's worker (llama.cpp's HTTP server) called directly, bypassing the gateway
  modelport    the gateway -> worker path every client uses
  llama-cpp-python  its OpenAI server, only with --with-llama-cpp-python (installs into a side
               venv; compiling takes ~5 minutes the first time)

Each level sends CONCURRENCY streaming chat requests at once (fixed prompts, temperature 0,
ignore_eos, fixed max_tokens) for --rounds rounds, and reports aggregate output tok/s,
TTFT p50/p99, inter-token latency p50/p99 and errors. Also reports gateway start-up time to ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    OUT_DIR, SMOLLM2, ServeProcess, free_port, print_table, summarize_ms, write_result,
)

WORKER_KEY = "bench-worker-key"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "Describe a busy market in the morning.",
    "Write a letter to a friend about a trip to the mountains.",
    "Tell me about the history of bicycles.",
    "Write a poem about the sea at night.",
    "Explain why the sky is blue to a child.",
    "Describe your ideal library.",
]


@dataclass
class RequestTiming:
    started: float
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    error: str | None = None


def request_body(index: int, max_tokens: int, model: str = "bench") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}


def summarize(level: int, timings: list[RequestTiming], wall_s: float) -> dict:
    ok = [t for t in timings if t.error is None and t.token_times]
    ttft = [t.token_times[0] - t.started for t in ok]
    itl = [b - a for t in ok for a, b in zip(t.token_times, t.token_times[1:])]
    tokens = sum(t.completion_tokens or len(t.token_times) for t in ok)
    failures = sorted({t.error or "no tokens" for t in timings if t not in ok})
    return {"concurrency": level, "requests": len(timings), "errors": len(timings) - len(ok),
            "error_kinds": failures,
            "output_tokens": tokens, "wall_s": round(wall_s, 3),
            "tok_per_s": round(tokens / wall_s, 1) if wall_s else 0.0,
            "ttft_ms": summarize_ms(ttft), "itl_ms": summarize_ms(itl)}


# ---- over HTTP: worker direct, modelport, peers --------------------------------------------

async def _stream_one(session: aiohttp.ClientSession, url: str, body: dict,
                      timing: RequestTiming) -> None:
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                timing.error = f"HTTP {response.status}"
                return
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    timing.completion_tokens = event["usage"]["completion_tokens"]
                for choice in event.get("choices", []):
                    if (choice.get("delta") or {}).get("content"):
                        timing.token_times.append(time.perf_counter())
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        timing.error = repr(error)


class InProcessTarget:
    """llama.cpp's server loop in this process, called without HTTP: the engine's limit."""

    name = "in-process"

    def __init__(self, max_tokens: int, parallel: int, context: int) -> None:
        import xllamacpp

        from modelport.config import LlamaCppModel
        from modelport.config.locations import resolve_location
        from modelport.workers.llamacpp_worker import build_params

        model = LlamaCppModel(name="bench", engine="llamacpp", path=SMOLLM2, parallel=parallel,
                              context_length=context)
        path = resolve_location(model.path, Path("."))
        # Same parameters as the worker, so only the serving path differs.
        self.server = xllamacpp.Server(build_params(model, path, "127.0.0.1", free_port()))
        self.max_tokens = max_tokens

    def _one(self, index: int, timing: RequestTiming) -> None:
        def on_chunk(chunk: dict) -> None:
            if chunk.get("usage"):
                timing.completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    timing.token_times.append(time.perf_counter())

        try:
            self.server.handle_chat_completions(request_body(index, self.max_tokens), on_chunk)
        except Exception as error:  # noqa: BLE001 - counted as an error of the run
            timing.error = repr(error)

    def run_round(self, level: int) -> list[RequestTiming]:
        batch = [RequestTiming(time.perf_counter()) for _ in range(level)]
        threads = [threading.Thread(target=self._one, args=(i, t)) for i, t in enumerate(batch)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return batch


class HttpTarget:
    """An OpenAI chat endpoint reached over HTTP (the worker, modelport, a peer server)."""

    def __init__(self, name: str, url: str, max_tokens: int, key: str | None = None) -> None:
        self.name, self.url, self.max_tokens = name, url, max_tokens
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def run_round(self, level: int) -> list[RequestTiming]:
        async def go() -> list[RequestTiming]:
            batch = [RequestTiming(time.perf_counter()) for _ in range(level)]
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=600),
                                             headers=self.headers) as session:
                await asyncio.gather(*(_stream_one(session, self.url,
                                                   request_body(i, self.max_tokens), t)
                                       for i, t in enumerate(batch)))
            return batch

        return asyncio.run(go())


def run_interleaved(targets: list, levels: list[int], rounds: int) -> dict[str, list[dict]]:
    """Round r of every target runs before round r+1 of any, the order rotating, so drift
    in the machine's speed falls on all targets alike."""
    for target in targets:
        target.run_round(1)  # warm-up
    results: dict[str, list[dict]] = {t.name: [] for t in targets}
    for level in levels:
        timings: dict[str, list[RequestTiming]] = {t.name: [] for t in targets}
        wall: dict[str, float] = {t.name: 0.0 for t in targets}
        for round_index in range(rounds):
            shift = round_index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                started = time.perf_counter()
                timings[target.name] += target.run_round(level)
                wall[target.name] += time.perf_counter() - started
        for target in targets:
            results[target.name].append(summarize(level, timings[target.name], wall[target.name]))
    return results


def llama_cpp_python_server(parallel: int, context: int) -> tuple[subprocess.Popen, str]:
    """Install llama-cpp-python[server] into a side venv (once) and start its OpenAI server."""
    venv = OUT_DIR / "peer-llama-cpp-python"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "llama-cpp-python[server]"],
                       check=True)
    from modelport.config.locations import resolve_location

    path = resolve_location(SMOLLM2, Path("."))
    port = free_port()
    process = subprocess.Popen(
        [str(python), "-m", "llama_cpp.server", "--model", str(path), "--n_ctx", str(context),
         "--host", "127.0.0.1", "--port", str(port), "--model_alias", "bench"],
        stdout=open(OUT_DIR / "peer-llama-cpp-python.log", "wb"), stderr=subprocess.STDOUT)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per level")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--parallel", type=int, default=16, help="llama.cpp slots")
    parser.add_argument("--context", type=int, default=1024, help="context per slot")
    parser.add_argument("--targets", default="in-process,worker,modelport",
                        help="which of in-process,worker,modelport to run")
    parser.add_argument("--with-llama-cpp-python", action="store_true",
                        help="also measure llama-cpp-python's server (side venv install)")
    args = parser.parse_args()
    levels = [int(v) for v in args.concurrency.split(",")]
    targets = args.targets.split(",")
    report: dict = {"settings": vars(args), "results": {}}

    runners: list = []
    if "in-process" in targets:
        runners.append(InProcessTarget(args.max_tokens, args.parallel, args.context))
    serve = peer = None
    try:
        if "worker" in targets or "modelport" in targets:
            serve = ServeProcess([{"name": "bench", "engine": "llamacpp", "path": SMOLLM2,
                                   "parallel": args.parallel, "context_length": args.context,
                                   "max_queue": 256,
                                   # A worker answers only its gateway's per-start secret
                                   # and this key (401 otherwise): the "worker" target is
                                   # a client calling it directly.
                                   "worker_key": WORKER_KEY}]).start()
            report["startup_to_ready_s"] = round(serve.ready_after_s or 0, 2)
            worker_url = serve.health()["models"]["bench"]["worker"]["url"]
            if "worker" in targets:
                runners.append(HttpTarget("worker", worker_url + "/chat/completions",
                                          args.max_tokens, key=WORKER_KEY))
            if "modelport" in targets:
                runners.append(HttpTarget("modelport", serve.url + "/v1/chat/completions",
                                          args.max_tokens))
        if args.with_llama_cpp_python:
            peer, url = llama_cpp_python_server(args.parallel, args.context)
            runners.append(HttpTarget("llama-cpp-python", url, args.max_tokens))
        report["results"] = run_interleaved(runners, levels, args.rounds)
    finally:
        if serve is not None:
            serve.stop()
        if peer is not None:
            peer.terminate()

    rows = []
    for target, levels_result in report["results"].items():
        for r in levels_result:
            rows.append([target, r["concurrency"], r["requests"], r["errors"], r["tok_per_s"],
                         r["ttft_ms"]["p50"], r["ttft_ms"]["p99"], r["itl_ms"]["p50"],
                         r["itl_ms"]["p99"]])
    print_table("streaming throughput (SmolLM2-135M Q4_1)",
                ["target", "conc", "reqs", "errors", "tok/s", "ttft p50 ms", "ttft p99 ms",
                 "itl p50 ms", "itl p99 ms"], rows)
    base = {r["concurrency"]: r["tok_per_s"] for r in report["results"].get("in-process", [])}
    for target in ("worker", "modelport", "llama-cpp-python"):
        for r in report["results"].get(target, []):
            if base.get(r["concurrency"]):
                r["vs_in_process"] = round(r["tok_per_s"] / base[r["concurrency"]], 3)
    if "startup_to_ready_s" in report:
        print(f"\nmodelport start-up to ready: {report['startup_to_ready_s']} s")
    for target in ("worker", "modelport", "llama-cpp-python"):
        ratios = [f"c{r['concurrency']}={r['vs_in_process']}" for r in
                  report["results"].get(target, []) if "vs_in_process" in r]
        if ratios:
            print(f"{target} / in-process: {', '.join(ratios)}")
    print(f"\nwritten: {write_result('engine_throughput', report)}")


if __name__ == "__main__":
    main()
