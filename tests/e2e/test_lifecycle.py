"""Keys, worker restarts, clean shutdown and start-up refusals of a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from support.models import CHAT, EMBED, default_models
from support.server import ModelportServer, pid_alive

pytestmark = pytest.mark.e2e

KEY = "mp-test-key-42"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    config = {"server": {"api_keys": ["${E2E_GATEWAY_KEY}"]}, "models": default_models()}
    server = ModelportServer(config, tmp_path_factory.mktemp("keyed"),
                             env={"E2E_GATEWAY_KEY": KEY})
    server.start()
    yield server
    server.stop()


def test_keys_are_enforced_on_every_v1_route(keyed_server):
    url = keyed_server.base_url
    for method, path in [("GET", "/models"), ("POST", "/chat/completions"),
                         ("POST", "/embeddings"), ("POST", "/completions"),
                         ("GET", "/no-such-route")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = httpx.request(method, url + path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["type"] == "authentication_error"
    good = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    assert {m.id for m in good.models.list().data} == {CHAT, EMBED}
    assert httpx.get(keyed_server.url + "/health").status_code == 200  # stays open


def test_health_without_a_key_shows_status_only(keyed_server):
    for path in ("/health", "/health/ready"):
        anonymous = httpx.get(keyed_server.url + path).json()
        assert set(anonymous) == {"status", "ready", "models"}
        assert anonymous["models"][CHAT] == {"status": "ready"}
        wrong = httpx.get(keyed_server.url + path, headers={"Authorization": "Bearer no"}).json()
        assert wrong == anonymous
        full = httpx.get(keyed_server.url + path, headers=AUTH).json()
        assert full["models"][CHAT]["worker"]["pid"] > 0 and "uptime_s" in full


def keyed_health(server) -> dict:
    return httpx.get(server.url + "/health", headers=AUTH, timeout=5).json()


def test_sdk_with_wrong_key_gets_authentication_error(keyed_server):
    bad = openai.OpenAI(base_url=keyed_server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])


def test_killed_worker_restarts_while_other_models_answer(keyed_server):
    client = openai.OpenAI(base_url=keyed_server.base_url, api_key=KEY, max_retries=0)
    old_pid = keyed_health(keyed_server)["models"][CHAT]["worker"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (keyed_health(keyed_server)["models"][CHAT]["status"] == "ready"
           and time.monotonic() < deadline):
        time.sleep(0.02)
    # While the chat worker is down (a restart waits >= 1 s of backoff, then loads the model):
    # its requests get 503 + Retry-After at once, and embeddings still work.
    assert keyed_health(keyed_server)["models"][CHAT]["status"] == "restarting"
    response = httpx.post(keyed_server.base_url + "/chat/completions",
                          headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": CHAT, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "model_not_ready"
    assert len(client.embeddings.create(model=EMBED, input="still here").data[0].embedding) == 384
    keyed_server.wait_ready(60)
    health = keyed_health(keyed_server)
    assert health["models"][CHAT]["restarts"] == 1
    assert health["models"][CHAT]["worker"]["pid"] != old_pid
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    assert reply.choices[0].message.content


def test_sigterm_stops_gateway_and_all_workers(tmp_path):
    server = ModelportServer({"models": default_models()[:1]}, tmp_path).start()
    worker_pid = server.health()["models"][CHAT]["worker"]["pid"]
    assert pid_alive(worker_pid)
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "all workers stopped" in server.log()
    deadline = time.monotonic() + 10
    while pid_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker_pid), "worker left running after the gateway stopped"


def test_sigkilled_gateway_leaves_no_orphan_worker(tmp_path):
    server = ModelportServer({"models": default_models()[:1]}, tmp_path).start()
    worker_pid = server.health()["models"][CHAT]["worker"]["pid"]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    deadline = time.monotonic() + 10
    while pid_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker_pid)


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_public_bind_without_keys_is_refused(tmp_path):
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    assert "api_keys" in result.stderr and "--allow-public" in result.stderr


def test_missing_model_file_names_every_path_tried(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text("server:\n  models_dir: models\nmodels:\n"
                      "  - {name: glm, engine: llamacpp, path: THUDM/chatglm-6b.gguf}\n")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert str(tmp_path / "models" / "THUDM" / "chatglm-6b.gguf") in result.stderr
    assert str(tmp_path / "models" / "chatglm-6b.gguf") in result.stderr


def test_unset_env_var_is_a_clear_startup_error(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text("models:\n  - {name: gpt, engine: openai, base_url: 'https://x.test/v1',"
                      " api_key: '${SURELY_UNSET_KEY_VAR}'}\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert "SURELY_UNSET_KEY_VAR is not set" in result.stderr


def test_worker_config_error_fails_the_model_once_with_its_reason(tmp_path):
    empty = tmp_path / "not-a-checkpoint"
    empty.mkdir()
    config = {"models": default_models()[:1] + [
        {"name": "broken", "engine": "transformers", "path": str(empty)}]}
    server = ModelportServer(config, tmp_path)
    try:
        server.start_process()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                models = server.health()["models"]
                if models["broken"]["status"] == "failed" and models[CHAT]["status"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        broken = server.health()["models"]["broken"]
        assert broken["status"] == "failed"
        assert "config.json is missing" in broken["detail"]
        time.sleep(3)  # a restart loop would have tried again by now (backoff starts at 1 s)
        assert server.health()["models"]["broken"]["restarts"] == 0
        response = httpx.post(server.base_url + "/chat/completions", json={
            "model": "broken", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 503
        assert "config.json is missing" in response.json()["error"]["message"]
        reply = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
            "model": CHAT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3})
        assert reply.status_code == 200
    finally:
        server.stop()


def test_vllm_engine_without_vllm_is_a_startup_error(tmp_path):
    checkpoint = tmp_path / "hf-model"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    config = tmp_path / "modelport.yaml"
    config.write_text(f"models:\n  - {{name: big, engine: vllm, path: '{checkpoint}'}}\n")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "vllm" in result.stderr.lower() and "big" in result.stderr


def test_a_request_sent_while_the_gateway_starts_waits_for_its_model(tmp_path):
    # What a client of a gateway that was just restarted sees: no 503 while the model's
    # worker starts, an answer once it is ready.
    server = ModelportServer({"models": [{"name": "fresh", "engine": "llamacpp",
                                          "path": default_models()[0]["path"],
                                          "context_length": 512, "parallel": 1}]}, tmp_path)
    server.start_process()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, server.log()
            try:
                health = httpx.get(server.url + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.01)
        assert health["models"]["fresh"]["status"] == "starting"  # the port opens first
        reply = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
            "model": "fresh", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200, reply.text
    finally:
        server.stop()
