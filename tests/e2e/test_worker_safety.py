"""Workers behind the gateway: their ports, their per-start secret, their body cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from support.models import CHAT, EMBED, MINILM, SMOLLM2
from support.server import ModelportServer, free_port, pid_alive
from support.server import worker_secret as secret_of

pytestmark = pytest.mark.e2e

WORKER_KEY = "mp-worker-key-7"
BODY_CAP = 64 * 1024


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200",
                                                           **(env or {})})


class Impostor:
    """Another HTTP server on a port: answers 200 with JSON to everything, as a gateway
    without keys (or any unrelated server) would to a readiness probe."""

    def __init__(self, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _ok(self) -> None:
                body = b'{"status": "ok", "object": "list", "data": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _ok

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "modelport.yaml"
    path.write_text(text)
    return path


def test_worker_port_equal_to_the_gateway_port_is_refused(tmp_path):
    port = free_port()
    config = write_config(tmp_path, f"server: {{port: {port}}}\nmodels:\n"
                          f"  - {{name: chat, engine: llamacpp, path: '{SMOLLM2}', port: {port}}}\n")
    for command in ("check", "serve"):
        result = run_cli(command, "--config", str(config))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"model 'chat': port {port} is also the port of the gateway" in result.stderr


def test_worker_port_taken_by_another_server_is_refused(tmp_path):
    port = free_port()
    impostor = Impostor(port)
    try:
        config = write_config(tmp_path, "models:\n"
                              f"  - {{name: chat, engine: llamacpp, path: '{SMOLLM2}', "
                              f"port: {port}}}\n")
        for command in ("check", "serve"):
            result = run_cli(command, "--config", str(config), "--port", str(free_port())) \
                if command == "serve" else run_cli(command, "--config", str(config))
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert f"model 'chat': port {port} on 127.0.0.1 is already in use" in result.stderr
    finally:
        impostor.close()


def test_worker_that_cannot_bind_fails_once_with_the_reason(tmp_path):
    """The port is free at start-up, taken while the worker restarts: the supervisor must
    not take the other server's 200 for its worker, and must not restart forever."""
    worker_port = free_port()
    models = [{"name": CHAT, "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
               "parallel": 1, "port": worker_port}]
    server = ModelportServer({"models": models}, tmp_path).start()
    impostor = None
    try:
        old_pid = server.health()["models"][CHAT]["worker"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        while pid_alive(old_pid):
            time.sleep(0.01)
        deadline = time.monotonic() + 0.8  # before the restart (backoff >= 1 s)
        while impostor is None:
            try:
                impostor = Impostor(worker_port)
            except OSError:  # the dead worker's connections may hold it a moment
                assert time.monotonic() < deadline
                time.sleep(0.05)
        deadline = time.monotonic() + 60
        while server.health()["models"][CHAT]["status"] not in ("failed", "ready"):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        chat = server.health()["models"][CHAT]
        assert chat["status"] == "failed", server.log()
        assert f"port {worker_port} on 127.0.0.1 is already in use" in chat["detail"]
        time.sleep(3)  # a restart loop would have tried again by now
        chat = server.health()["models"][CHAT]
        assert chat["status"] == "failed" and chat["restarts"] == 1
        response = httpx.post(server.base_url + "/chat/completions", json={
            "model": CHAT, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 503
        assert "already in use" in response.json()["error"]["message"]
    finally:
        if impostor is not None:
            impostor.close()
        server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    config = {"server": {"max_body_bytes": BODY_CAP}, "models": [
        {"name": CHAT, "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
         "parallel": 1},
        {"name": EMBED, "engine": "sentence-transformers", "path": MINILM,
         "worker_key": "${E2E_WORKER_KEY}"},
    ]}
    server = ModelportServer(config, tmp_path_factory.mktemp("guarded"),
                             env={"E2E_WORKER_KEY": WORKER_KEY})
    server.start()
    yield server
    server.stop()


def worker_url(server: ModelportServer, name: str) -> str:
    return server.health()["models"][name]["worker"]["url"]


def worker_secret(server: ModelportServer, name: str) -> str:
    return secret_of(server.health()["models"][name]["worker"]["pid"])


def test_workers_refuse_requests_without_the_secret(guarded):
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    embed = {"model": EMBED, "input": "hello"}
    for name, path, body in [(CHAT, "/chat/completions", chat), (EMBED, "/embeddings", embed)]:
        url = worker_url(guarded, name)
        assert httpx.post(url + path, json=body, timeout=60).status_code == 401, name
        wrong = {"Authorization": "Bearer not-the-secret"}
        assert httpx.post(url + path, json=body, headers=wrong, timeout=60).status_code == 401
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # probes
        secret = {"Authorization": f"Bearer {worker_secret(guarded, name)}"}
        assert httpx.post(url + path, json=body, headers=secret, timeout=60).status_code == 200
        via_gateway = httpx.post(guarded.base_url + path, json=body, timeout=60)
        assert via_gateway.status_code == 200, via_gateway.text
    # The configured worker_key is accepted too (a client calling the worker directly).
    direct = httpx.post(worker_url(guarded, EMBED) + "/embeddings", json=embed, timeout=60,
                        headers={"Authorization": f"Bearer {WORKER_KEY}"})
    assert direct.status_code == 200


def test_worker_secret_is_never_logged_nor_in_argv(guarded):
    for name in (CHAT, EMBED):
        secret = worker_secret(guarded, name)
        pid = guarded.health()["models"][name]["worker"]["pid"]
        assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret not in guarded.log_path.read_text(errors="replace")  # debug log level
        assert secret not in httpx.get(guarded.url + "/health").text


def test_worker_caps_the_request_body(guarded):
    url = worker_url(guarded, EMBED) + "/embeddings"
    headers = {"Authorization": f"Bearer {WORKER_KEY}"}
    big = {"model": EMBED, "input": "x" * (BODY_CAP + 1)}
    response = httpx.post(url, json=big, headers=headers, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"

    def chunks():  # no Content-Length: the cap holds on the bytes actually received
        for _ in range(4):
            yield b"x" * (BODY_CAP // 2)

    streamed = httpx.post(url, content=chunks(), headers=headers, timeout=60)
    assert streamed.status_code == 413
    small = httpx.post(url, json={"model": EMBED, "input": "fits"}, headers=headers, timeout=60)
    assert small.status_code == 200


def test_worker_alone_on_a_public_host_needs_a_worker_key(tmp_path):
    result = run_cli("worker", "smollm2", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "worker_key" in result.stderr and "0.0.0.0" in result.stderr
