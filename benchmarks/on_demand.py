#!/usr/bin/env python
"""Models on demand: time to first token of an unloaded (cold) model vs a loaded one, and
how long a configuration reload takes.

The default GGUF model (SmolLM2-135M-Instruct Q4_1, as the built-in config serves it) runs
with `load: on_demand`. Cold: the model is unloaded through the admin API, then one
streamed request is timed from sending it to its first content token (this includes
starting the worker and loading the file). Loaded: the same request once it is loaded.
Reload: POST /admin/reload with an unchanged file, with one model added (on demand, so
the answer does not wait for a load), and with the model's settings changed, timed until
the restarted model answers again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOLLM2, ServeProcess, print_table, summarize_ms, write_result  # noqa: E402

MASTER = "mk-bench"
HEADERS = {"Authorization": f"Bearer {MASTER}"}
MODEL = {"name": "smollm2-135m-instruct", "engine": "llamacpp", "path": SMOLLM2,
         "context_length": 2048, "parallel": 8, "chat_template": "chatml-tools",
         "load": "on_demand"}
REQUEST = {"model": MODEL["name"], "stream": True, "max_tokens": 16,
           "messages": [{"role": "user", "content": "Say hello."}]}


def first_token_s(url: str) -> float:
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=REQUEST, headers=HEADERS,
                      timeout=300) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = orjson.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without a content token")


def admin(url: str, path: str) -> dict:
    reply = httpx.post(url + "/admin" + path, headers=HEADERS, timeout=300)
    reply.raise_for_status()
    return reply.json()


def timed_reload(serve: ServeProcess, models: list[dict]) -> float:
    config = yaml.safe_load(serve.config.read_text())
    serve.config.write_text(yaml.safe_dump({**config, "models": models}))
    started = time.perf_counter()
    admin(serve.url, "/reload")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    serve = ServeProcess([MODEL], {"master_key": MASTER}).start()
    url = serve.url
    cold, loaded, unchanged, added, restarted = [], [], [], [], []
    try:
        for _ in range(args.rounds):
            admin(url, f"/models/{MODEL['name']}/unload")
            cold.append(first_token_s(url))
            loaded.extend(first_token_s(url) for _ in range(3))
        current = {**MODEL, "load": "always"}
        timed_reload(serve, [current])  # loaded with the server from now on
        for round_ in range(args.rounds):
            unchanged.append(timed_reload(serve, [current]))
            extra = {**MODEL, "name": f"extra-{round_}"}
            added.append(timed_reload(serve, [current, extra]))
            current = {**current, "context_length": 1024 + 64 * round_}
            started = time.perf_counter()
            timed_reload(serve, [current])
            _wait_ready(url)
            first_token_s(url)
            restarted.append(time.perf_counter() - started)
    finally:
        serve.stop()
    results = {"ttft_cold": summarize_ms(cold), "ttft_loaded": summarize_ms(loaded),
               "reload_unchanged": summarize_ms(unchanged), "reload_add": summarize_ms(added),
               "reload_restart_until_answer": summarize_ms(restarted), "rounds": args.rounds}
    rows = [[name, r["p50"], r["p99"], r["mean"]] for name, r in results.items()
            if isinstance(r, dict)]
    print_table("models on demand (ms)", ["measure", "p50", "p99", "mean"], rows)
    print(f"written to {write_result('on_demand', results)}")


def _wait_ready(url: str, timeout: float = 300) -> bool:
    """Until the restarted model is ready (a request before then gets 503)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        state = httpx.get(url + f"/admin/models/{MODEL['name']}", headers=HEADERS,
                          timeout=10).json()
        if state["state"] == "ready":
            return True
        time.sleep(0.02)
    raise TimeoutError("the restarted model did not become ready")


if __name__ == "__main__":
    main()
