"""Start and stop a real `modelport serve` process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelportServer:
    """`modelport serve` on a free loopback port with the given config, stopped by PID."""

    def __init__(self, config: dict, workdir: Path, env: dict[str, str] | None = None,
                 port: int | None = None, args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.args = list(args or [])
        config = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1",
                                       "port": self.port}}
        self.config_path = workdir / f"modelport-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"modelport-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start_process(self) -> "ModelportServer":
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", "--config", str(self.config_path),
             "--log-level", "debug", *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        return self

    def start(self, timeout: float = 180.0) -> "ModelportServer":
        self.start_process()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"modelport exited early:\n{self.log()}")
            try:
                response = httpx.get(self.url + "/health/ready", timeout=2)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"modelport not ready after {timeout}s:\n{self.log()}")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state to be sure it is gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    """`predicate()`'s first truthy value, polled every 0.1 s for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not {what} within {timeout} s")


def wait_inside_a_minute(needed_s: float = 20) -> None:
    """rpm counts per UTC minute: start a burst well inside one, so it all counts there."""
    while 60 - time.time() % 60 < needed_s:
        time.sleep(0.5)


def worker_secret(pid: int) -> str:
    """The per-start secret the supervisor gave a worker (readable only by its own user),
    for tests that call a worker directly."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"MODELPORT_WORKER_SECRET="):
            return entry.split(b"=", 1)[1].decode()
    raise AssertionError(f"no worker secret in the environment of pid {pid}")


@contextlib.contextmanager
def slot_held(server: ModelportServer, model: str,
              headers: dict[str, str] | None = None) -> Iterator[None]:
    """While inside, a long stream holds one of `model`'s slots (a one-slot model with no
    queue then refuses every other request)."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with httpx.stream("POST", server.base_url + "/chat/completions", timeout=60,
                          headers=headers, json={
                "model": model, "messages": [{"role": "user", "content": "Tell a story."}],
                "stream": True, "max_tokens": 900, "ignore_eos": True}) as reply:
            for _ in reply.iter_lines():
                holding.set()
                if release.is_set():
                    break

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30), f"no stream from {model} to hold its slot"
        yield
    finally:
        release.set()
        thread.join(30)
