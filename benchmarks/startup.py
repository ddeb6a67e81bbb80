"""Start-up time: from `modelport serve` to /health/ready with the default models.

Three measurements, each the median of --runs fresh processes:
  serve     `modelport serve` with the built-in default models (on a free port) until
            /health/ready answers 200, plus each worker's own "ready in" from the log
            and the CPU time the gateway and each worker had spent by then
  worker    `modelport worker NAME` alone, from exec until its /health answers 200, and
            the CPU time (user + system, all threads) it spent until then: what the
            wall time would be on idle cores, where other work inflates the wall time
  phases    where the embedding worker's time goes, in a fresh interpreter each run, on
            the path the default model takes (modelport's own BERT encoder): importing
            torch, importing tokenizers and safetensors, loading the model, the first
            forward pass; then importing sentence_transformers, which that path avoids;
            and importing the gateway's CLI

Usage: .venv/bin/python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, ServeProcess, free_port, print_table, write_result  # noqa: E402

from modelport.config.defaults import DEFAULT_CONFIG  # noqa: E402

_PHASES = r"""
import json, sys, time
marks = [("start", time.perf_counter())]
import torch
marks.append(("import torch", time.perf_counter()))
import tokenizers, safetensors.torch
marks.append(("import tokenizers, safetensors", time.perf_counter()))
from pathlib import Path
from modelport.config import SentenceTransformersModel
from modelport.config.locations import resolve_location
from modelport.engines.text_encoders import open_encoder
path = resolve_location(sys.argv[1], Path("."), "embed")
encoder = open_encoder(SentenceTransformersModel(name="embed", engine="sentence-transformers",
                                                 path=sys.argv[1]), path)
marks.append((f"load the model ({encoder.kind})", time.perf_counter()))
ids = torch.tensor(encoder.token_ids(["warm up"]))
with torch.inference_mode():
    encoder.forward(ids, torch.ones_like(ids))
marks.append(("first forward pass", time.perf_counter()))
import sentence_transformers
marks.append(("import sentence_transformers (after torch; not on this path)", time.perf_counter()))
print(json.dumps([(name, at - marks[i][1]) for i, (name, at) in enumerate(marks[1:])]))
"""
_TICK = os.sysconf("SC_CLK_TCK")


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _cpu_s(pid: int) -> float:
    """User + system seconds of the process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def serve_once() -> dict:
    """serve's time to ready, each worker's "ready in" from the log, and the CPU time each
    of its processes (the gateway, each worker) had spent when serve was ready."""
    serve = ServeProcess(DEFAULT_CONFIG["models"])
    try:
        serve.start()
        log = serve.log.read_text(errors="replace")
        ready = re.findall(r"replica (\S+): ready in ([\d.]+) s \(pid (\d+)\)", log)
        cpu = {"gateway": _cpu_s(serve.process.pid),
               **{name: _cpu_s(int(pid)) for name, _, pid in ready}}
    finally:
        serve.stop()
    return {"ready_s": serve.ready_after_s, "cpu_s": cpu,
            "workers": {name: float(seconds) for name, seconds, _ in ready}}


def worker_once(config: Path, name: str) -> tuple[float, float]:
    """(wall, CPU) seconds from exec until the worker's /health answers."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "worker", name, "--config", str(config),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        while time.perf_counter() - started < 300:
            if process.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - started, _cpu_s(process.pid)
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"worker {name} not ready")
    finally:
        _stop(process)


def phases_once(path: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", _PHASES, path], capture_output=True,
                            text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def cli_import_once() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import modelport.cli.main"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh starts per measurement")
    args = parser.parse_args()
    models = DEFAULT_CONFIG["models"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # Its own keys-and-usage database: the first run creates it, the others open it as a
    # user's every start after the first does.
    os.environ["MODELPORT_DATA_DIR"] = str(OUT_DIR / "startup-data")
    config = OUT_DIR / "startup-workers.yaml"
    config.write_text(yaml.safe_dump({"models": models}))
    embedding = next(m for m in models if m["engine"] == "sentence-transformers")

    load_before = os.getloadavg()
    serves = [serve_once() for _ in range(args.runs)]
    workers = {m["name"]: [worker_once(config, m["name"]) for _ in range(args.runs)]
               for m in models}
    phases = [phases_once(embedding["path"]) for _ in range(args.runs)]
    imports = [cli_import_once() for _ in range(args.runs)]

    report = {
        "runs": args.runs,
        "load_before": load_before,
        "serve_ready_s": {"median": _median([s["ready_s"] for s in serves]),
                          "all": [round(s["ready_s"], 2) for s in serves]},
        "serve_worker_ready_s": {name: _median([s["workers"][name] for s in serves])
                                 for name in serves[0]["workers"]},
        "serve_cpu_s": {name: _median([s["cpu_s"][name] for s in serves])
                        for name in serves[0]["cpu_s"]},
        # The gateway's own part: from spawn until it starts the workers, plus the polling
        # that notices the last one ready (serve's time less its slowest worker's).
        "serve_gateway_s": _median([s["ready_s"] - max(s["workers"].values()) for s in serves]),
        "worker_alone_s": {name: {"median": _median([wall for wall, _ in runs]),
                                  "all": [round(wall, 2) for wall, _ in runs],
                                  "cpu_median": _median([cpu for _, cpu in runs])}
                           for name, runs in workers.items()},
        "embedding_phases_s": {name: _median([p[name] for p in phases]) for name in phases[0]},
        "gateway_cli_import_s": _median(imports),
    }
    report["load_after"] = os.getloadavg()
    rows = [["serve -> /health/ready", report["serve_ready_s"]["median"],
             " ".join(map(str, report["serve_ready_s"]["all"]))]]
    rows += [[f"  {name} (its worker, in serve)", seconds, ""]
             for name, seconds in report["serve_worker_ready_s"].items()]
    rows.append(["  gateway (serve less its slowest worker)", report["serve_gateway_s"], ""])
    rows += [[f"  CPU time of {name} until serve was ready", seconds, ""]
             for name, seconds in report["serve_cpu_s"].items()]
    for name, value in report["worker_alone_s"].items():
        rows.append([f"worker {name} alone", value["median"], " ".join(map(str, value["all"]))])
        rows.append(["  its CPU time (user + system)", value["cpu_median"], ""])
    rows += [[f"  embedding: {name}", seconds, ""]
             for name, seconds in report["embedding_phases_s"].items()]
    rows.append(["import modelport.cli.main (new interpreter)", report["gateway_cli_import_s"], ""])
    print_table(f"start-up, median of {args.runs} (load {report['load_before'][0]:.2f} before, "
                f"{report['load_after'][0]:.2f} after)", ["what", "median s", "runs"], rows)
    print(f"written: {write_result('startup', report)}")


if __name__ == "__main__":
    main()
