"""What a new user meets in the first hour: the console at the server's address, a master
key that locks /v1 said out loud at start-up, and a CLI that says how to send a key."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from support.server import ModelportServer, free_port

pytestmark = pytest.mark.e2e
MASTER = "sk-master-first-hour"
CONFIG = {"server": {"master_key": MASTER},
          "models": [{"name": "remote", "engine": "openai",
                      "base_url": f"http://127.0.0.1:{free_port()}/v1"}]}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    for name in ("MODELPORT_URL", "MODELPORT_CONFIG", "MODELPORT_API_KEY"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=60, env=environment)


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    server = ModelportServer(CONFIG, tmp_path_factory.mktemp("first-hour"),
                             env={"MODELPORT_API_KEY": "", "MODELPORT_MASTER_KEY": ""})
    server.start(timeout=60)
    yield server
    server.stop()


def test_start_up_log_prints_the_console_url_and_says_v1_is_locked(locked):
    log = locked.log()
    assert f"console: http://127.0.0.1:{locked.port}/ui/" in log
    warnings = [line for line in log.splitlines() if "a master key is set and no API keys" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]
    assert "modelport keys create" in warnings[0] and "MODELPORT_API_KEY" in warnings[0]
    assert MASTER not in log


def test_the_servers_address_leads_to_the_console(locked):
    response = httpx.get(locked.url + "/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"
    page = httpx.get(locked.url + "/", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert str(page.url) == locked.url + "/ui/"


@pytest.mark.parametrize("command", [["models"], ["chat", "remote", "-m", "hi"]])
def test_cli_answered_401_says_how_to_send_a_key(locked, command):
    done = run_cli(*command, "--url", locked.url)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "HTTP 401" in message
    assert "--api-key" in message and "MODELPORT_API_KEY" in message


def test_cli_reads_the_key_from_the_environment_or_the_flag(locked):
    from_env = run_cli("models", "--url", locked.url, env={"MODELPORT_API_KEY": MASTER})
    assert from_env.returncode == 0, from_env.stderr
    assert "remote" in from_env.stdout
    from_flag = run_cli("models", "--url", locked.url, "--api-key", MASTER)
    assert from_flag.returncode == 0, from_flag.stderr
    assert "remote" in from_flag.stdout


@pytest.fixture(scope="module")
def running_with_worker(tmp_path_factory):
    """A server whose local model's worker listens on a port the config names."""
    from support.models import CHAT, SMOLLM2

    config = {"models": [{"name": CHAT, "engine": "llamacpp", "path": SMOLLM2,
                          "port": free_port(), "context_length": 512, "parallel": 1,
                          "threads": 1}]}
    server = ModelportServer(config, tmp_path_factory.mktemp("already-serving"))
    server.start(timeout=180)
    yield server
    server.stop()


def test_check_while_the_server_runs_names_it_instead_of_every_taken_port(running_with_worker):
    server = running_with_worker
    done = run_cli("check", "--config", str(server.config_path))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert (f"a modelport server is already serving on port {server.port} "
            f"(pid {server.process.pid})") in message
    assert "already in use" not in message  # neither the gateway's port nor the worker's


def test_a_port_taken_by_another_program_is_still_reported_as_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "modelport.yaml"
        config.write_text(f"server: {{port: {port}}}\nmodels: []\n")
        done = run_cli("check", "--config", str(config))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "modelport server is already serving" not in message


def test_serve_a_gguf_file_with_no_config(tmp_path):
    """`modelport serve --model ./file.gguf` in a folder without modelport.yaml serves that
    one model under the file's name, as `vllm serve` would."""
    import shutil
    import signal

    from support.models import SMOLLM2
    from support.server import wait_for
    from modelport.config.locations import resolve_location

    gguf = tmp_path / "my-chat.gguf"
    shutil.copy(resolve_location(SMOLLM2, tmp_path), gguf)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MODELPORT_CONFIG", "MODELPORT_API_KEY")}
    env["MODELPORT_DATA_DIR"] = str(tmp_path / "data")
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "serve", "--model", "./my-chat.gguf",
         "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(url + "/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "ready")
        models = httpx.get(url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["my-chat"]
        answer = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": "my-chat", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
