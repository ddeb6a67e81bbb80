#!/usr/bin/env python
"""What the console's metrics history costs the gateway: one sample, and a full hour.

Builds the gateway's state for --models online models (nothing is called), fills the
Prometheus counters with finished requests for every model on three endpoints and two
statuses (the label sets a busy gateway has), then times MetricsHistory.sample() --repeat
times, fills the one-hour ring (360 samples) and times GET /admin/metrics/history's view
of it and the size of its JSON. Requests are not in this: they only update the counters
they always did.

    python benchmarks/metrics_history.py [--models 20] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, summarize_ms, write_result  # noqa: E402

from modelport.api.access_log import AccessRecord  # noqa: E402
from modelport.api.metrics import GatewayMetrics  # noqa: E402
from modelport.api.metrics_history import MetricsHistory  # noqa: E402
from modelport.config import parse_config  # noqa: E402
from modelport.gateway.build import build_state  # noqa: E402

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    state = build_state(parse_config({"models": [
        {"name": f"model-{i}", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}
        for i in range(args.models)]}))
    metrics = GatewayMetrics(state.registry, ENDPOINTS)
    for deployment in state.registry:
        for endpoint in ENDPOINTS:
            for status in (200, 429):
                record = AccessRecord("POST", endpoint, model=deployment.name, status=status,
                                      prompt_tokens=10, completion_tokens=20,
                                      first_byte_s=0.05, streamed=True)
                record.ended = record.started + 0.3
                metrics.observe(record)
    history = MetricsHistory(metrics, state.registry)
    now = 1_000_000.0
    timings = []
    for step in range(args.repeat):
        started = time.perf_counter()
        history.sample(now + step * history.interval_s)
        timings.append(time.perf_counter() - started)
    capacity = int(history.window_s / history.interval_s)
    for step in range(args.repeat, capacity + 1):
        history.sample(now + step * history.interval_s)
    started = time.perf_counter()
    body = json.dumps(history.view())
    view_s = time.perf_counter() - started
    sample = summarize_ms(timings)
    rows = [["sample()", sample["p50"], sample["p99"]],
            ["full-hour view + JSON", round(view_s * 1000, 2), "-"]]
    print_table(f"metrics history, {args.models} models ({len(metrics._series)} label sets)",
                ["step", "p50 ms", "p99 ms"], rows)
    share = sample["p50"] / (history.interval_s * 1000) * 100
    print(f"\none sample every {history.interval_s:.0f} s: {share:.3f}% of one core")
    print(f"full hour ({capacity} samples): {len(body):,} bytes of JSON")
    path = write_result("metrics_history", {"models": args.models, "sample_ms": sample,
                                            "view_ms": round(view_s * 1000, 2),
                                            "hour_json_bytes": len(body)})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
