"""Each benchmark script runs end to end with tiny counts and writes its JSON result.

These prove the scripts work, not the numbers: performance is measured by running them
for real (see benchmarks/RESULTS.md), never asserted in tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.e2e


def run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    written = re.search(r"written: (\S+\.json)", result.stdout)
    assert written, result.stdout
    path = Path(written.group(1))
    data = json.loads(path.read_text())
    path.unlink()
    assert data["machine"]["cores"] >= 1
    return data


def test_engine_throughput_smoke():
    data = run("engine_throughput.py", "--concurrency", "2", "--rounds", "1", "--max-tokens", "8",
               "--parallel", "2", "--targets", "in-process,worker,modelport")
    for target in ("in-process", "worker", "modelport"):
        level = data["results"][target][0]
        assert level["errors"] == 0, (target, level["error_kinds"])
        assert level["output_tokens"] == 16
    assert data["startup_to_ready_s"] > 0


def test_gateway_overhead_smoke():
    data = run("gateway_overhead.py", "--rounds", "10", "--concurrency", "2", "--seconds", "0.3")
    assert set(data["added_latency"]) == {"non-streaming", "streaming"}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in data["load"]["modelport"])


def test_gateway_processes_smoke():
    data = run("gateway_processes.py", "--rounds", "1", "--concurrency", "4", "--seconds", "0.3",
               "--clients", "2", "--upstream-processes", "2")
    for mode in ("non-streaming", "streaming"):
        for count in ("1", "2"):
            (result,) = data["runs"][mode][count]
            assert result["errors"] == 0 and result["requests"] > 0, (mode, count, result)


def test_gateway_memory_smoke():
    data = run("gateway_memory.py", "--first", "20", "--total", "40", "--concurrency", "4")
    assert data["unexpected_statuses"] == 0


def test_prompt_scaling_smoke():
    data = run("prompt_scaling.py", "--lengths", "100", "--conversation-tokens", "200",
               "--repeats", "1")
    assert data["ttft_by_length"][0]["prompt_tokens"] > 50
    assert data["follow_up"]["follow_up_turn"]["ttft_ms"] > 0


def test_console_load_smoke():
    data = run("console_load.py", "--runs", "1")
    assert "app.js" in "".join(data["files"]) and data["total_bytes"] > 0
    assert data["ready_ms"]["p50"] > 0


def test_metrics_history_smoke():
    data = run("metrics_history.py", "--models", "2", "--repeat", "5")
    assert data["sample_ms"]["p50"] > 0 and data["hour_json_bytes"] > 0


def test_every_script_has_help():
    for script in ("engine_throughput.py", "gateway_overhead.py", "gateway_processes.py",
                   "gateway_memory.py",
                   "prompt_scaling.py", "zero_upstream.py", "usage_query.py", "console_load.py",
                   "metrics_history.py"):
        result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage" in result.stdout


def test_soak_smoke():
    # Outcomes are not asserted: the soak reports today's errors, the full run judges them.
    # As many clients as kinds, so that the first draw (every kind once) goes out at once
    # however slow the shared machine makes generation.
    data = run("soak.py", "--duration", "12", "--sample-interval", "3", "--concurrency", "11",
               "--max-tokens", "8", "--request-deadline", "60")
    for key in ("totals", "by_kind", "five_xx", "hung", "non_envelope", "stream_no_done",
                "examples", "rss_samples", "gateway_rss_growth_pct", "cancellation_probes",
                "checks", "pass"):
        assert key in data, key
    sys.path.insert(0, str(BENCHMARKS))
    from soak import WEIGHTS

    assert len(WEIGHTS) <= 11
    assert not [kind for kind in WEIGHTS if not data["sent_by_kind"].get(kind)], data["sent_by_kind"]
    assert sum(data["totals"].values()) == sum(data["sent_by_kind"].values())
    assert len(data["rss_samples"]) >= 3
    assert all(s["gateway_rss_kib"] and s["workers"] for s in data["rss_samples"])
    assert data["leftover_worker_pids_after_stop"] == []


def test_soak_help():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "soak.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage" in result.stdout


def test_embedding_throughput_smoke():
    data = run("embedding_throughput.py", "--clients", "2", "--per-request", "1,4",
               "--texts", "16", "--rounds", "1")
    assert [(r["clients"], r["texts_per_request"]) for r in data["results"]] == [(2, 1), (2, 4)]
    for row in data["results"]:
        assert row["modelport"]["errors"] == 0, row["modelport"]["error_kinds"]
        assert row["modelport"]["texts_per_s"] > 0 and row["in-process"]["texts_per_s"] > 0
        assert row["ratio"] > 0
        assert row["ceiling"]["texts_per_s"] > 0 and row["ceiling_ratio"] > 0
    help_text = subprocess.run([sys.executable, str(BENCHMARKS / "embedding_throughput.py"),
                                "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "usage" in help_text.stdout


def test_messages_overhead_smoke():
    data = run("messages_overhead.py", "--rounds", "5", "--chunks", "3")
    assert set(data["results"]) == {"non-streaming", "streaming"}
    assert data["results"]["streaming"]["messages"]["total_ms"]["p50"] > 0


def test_usage_query_smoke():
    data = run("usage_query.py", "--rows", "3000", "--keys", "5", "--repeat", "2")
    assert data["rows"] == 3000
    assert set(data["results"]) == {"summary_key", "summary_model", "summary_day",
                                    "admin_usage_key", "admin_usage_key_1d"}


def test_rerank_smoke():
    data = run("rerank.py", "--documents", "4", "--rounds", "1", "--warmup", "0")
    for kind in ("cross-encoder", "embedding"):
        assert data["results"][kind]["errors"] == 0
        assert data["results"][kind]["modelport"]["p50"] > 0


def test_tool_calls_smoke():
    data = run("tool_calls.py", "--rounds", "1", "--repeat", "200", "--max-tokens", "8")
    assert data["gateway_us"]["stream_events"] > 0
    assert set(data["end_to_end"]) == {"plain", "tools_auto", "tools_required"}
    assert data["end_to_end"]["tools_required"]["prompt_tokens"] > \
        data["end_to_end"]["plain"]["prompt_tokens"]


def test_startup_smoke():
    data = run("startup.py", "--runs", "1")
    assert data["serve_ready_s"]["median"] > 0
    assert set(data["worker_alone_s"]) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    assert set(data["serve_worker_ready_s"]) == {"smollm2-135m-instruct#0", "all-minilm-l6-v2#0"}
    assert data["worker_alone_s"]["all-minilm-l6-v2"]["cpu_median"] > 0
    assert list(data["embedding_phases_s"]) == [
        "import torch", "import tokenizers, safetensors",
        "load the model (modelport's BERT encoder)", "first forward pass",
        "import sentence_transformers (after torch; not on this path)"]


def test_chaos_smoke():
    data = run("chaos.py", "--minutes", "0.45", "--cycle-s", "25")
    assert data["faults"] >= 5 and data["answered"] > 0  # every kind of fault at least once
    assert data["small_budget"]["budget"] > 0 and "rows_lost" in data
