"""Workers take the CPUs they are given: under `taskset -c 0` on a machine with more
cores, a llama.cpp worker runs one thread and an embedding worker one torch thread, as
each engine reports it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from support.models import MINILM, SMOLLM2
from support.server import free_port, wait_for

pytestmark = pytest.mark.e2e


def _pinned_worker(workdir: Path, name: str, port: int) -> subprocess.Popen:
    # The test session's own thread caps are left out: only the affinity decides here.
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_NUM_THREADS", "MODELPORT_CPUS")}
    return subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "modelport", "worker", name,
         "--config", str(workdir / "models.yaml"), "--port", str(port)],
        stdout=open(workdir / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True, env=env)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_worker_pinned_to_one_cpu_runs_one_thread(tmp_path):
    assert len(os.sched_getaffinity(0)) >= 2, "needs a machine with 2 or more CPUs"
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [
        {"name": "chat", "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
         "parallel": 1},
        {"name": "embed", "engine": "sentence-transformers", "path": MINILM}]}))
    chat_port, embed_port = free_port(), free_port()
    chat = _pinned_worker(tmp_path, "chat", chat_port)
    embed = _pinned_worker(tmp_path, "embed", embed_port)
    try:
        for process, port in ((chat, chat_port), (embed, embed_port)):
            wait_for(lambda: _healthy(port) or process.poll() is not None, 180, "worker up")
            assert process.poll() is None, (tmp_path / "chat.log").read_text()[-3000:]
            allowed = Path(f"/proc/{process.pid}/status").read_text()
            assert re.search(r"Cpus_allowed_list:\s+0\n", allowed)
        # torch's pool is set on the engine thread, at the first forward pass.
        reply = httpx.post(f"http://127.0.0.1:{embed_port}/v1/embeddings", timeout=60,
                           json={"model": "embed", "input": "one thread"})
        assert reply.status_code == 200
        chat_log = (tmp_path / "chat.log").read_text(errors="replace")
        embed_log = wait_for(lambda: (lambda text: "torch uses" in text and text)(
            (tmp_path / "embed.log").read_text(errors="replace")), 10, "torch threads logged")
    finally:
        _stop(chat)
        _stop(embed)
    # llama.cpp's own account of the pool it started, and torch's of its intra-op pool.
    assert re.findall(r"threadpool init, n_threads = (\d+)", chat_log) == ["1"], chat_log[-3000:]
    assert "modelport worker 'embed': torch uses 1 thread(s)" in embed_log
    for log in (chat_log, embed_log):
        assert "1 usable CPU(s): affinity 0 (1 of" in log


def test_check_says_what_it_decided_from_the_cpus_given(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text(yaml.safe_dump({"server": {"processes": "auto"}, "models": [
        {"name": "chat", "engine": "llamacpp", "path": SMOLLM2}]}))
    env = {key: value for key, value in os.environ.items() if key != "MODELPORT_CPUS"}
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "modelport", "check", "--config",
         str(config)], capture_output=True, text=True, timeout=120,
        env={**env, "COLUMNS": "300"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gateway processes: 1 (processes: auto; one per usable CPU (affinity 0 " \
        in result.stdout
    assert "CPUs: 1 usable, 1 physical (affinity 0 (1 of" in result.stdout
    assert "llama.cpp runs 1 thread(s) and torch 1 per worker" in result.stdout
