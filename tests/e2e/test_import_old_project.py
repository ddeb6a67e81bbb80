"""The old service's users move over in one command: `modelport import-config` on the old
project's configs/ package gives a config that `modelport check` accepts and that serves
the same models, local, vLLM, embedding and online, under their old names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from openai import OpenAI

from fixtures.old_project_copy import old_project_copy
from support.server import ModelportServer, free_port

pytestmark = pytest.mark.e2e
USER_KEY = "sk-e2e-user-key-0123456789"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "COLUMNS": "200", **env})


def import_and_check(project, env: dict[str, str]) -> dict:
    """import-config on the two files, then check on what it wrote; the config as data."""
    target = project / "modelport.yaml"
    imported = run_cli("import-config", str(project / "configs" / "model_config.py"),
                       str(project / "configs" / "server_config.py"), "-o", str(target),
                       env=env)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "ran configs.model_config, configs.server_config" in imported.stdout
    checked = run_cli("check", "--config", str(target), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "config OK" in checked.stdout
    return yaml.safe_load(target.read_text())


def test_old_project_imports_passes_check_and_serves(tmp_path, fake_upstream):
    port = free_port()
    project = old_project_copy(tmp_path, port)
    # what the old users exported: where gpt-4 is (here a local fake) and its key
    env = {"API_BASE_URL": fake_upstream.url("echo"), "OPENAI_API_KEY": USER_KEY}
    config = import_and_check(project, env)
    models = {model["name"]: model for model in config["models"]}
    assert models["smollm2-135m"]["engine"] == "llamacpp"
    assert models["smollm2-135m"]["port"] == 20057 and config["server"]["port"] == port
    assert models["smollm2-vllm"]["engine"] == "vllm"
    assert models["all-MiniLM-L6-v2"]["engine"] == "sentence-transformers"
    assert models["gpt-4"]["base_url"] == "${API_BASE_URL}"
    assert models["gpt-4"]["api_key"] == "${OPENAI_API_KEY:-}"
    assert models["zhipu-api"]["vendor"] == "zhipu"
    assert models["example"]["engine"] == "plugin"
    assert USER_KEY not in (project / "modelport.yaml").read_text()

    server = ModelportServer(config, project, port=port, env=env, args=[
        "--model", "smollm2-135m", "--model", "all-MiniLM-L6-v2", "--model", "gpt-4"])
    try:
        server.start(timeout=300)
        client = OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=120)
        local = client.chat.completions.create(
            model="smollm2-135m", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "Hello! What is your name?"}])
        assert local.choices[0].message.content
        vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello"])
        assert len(vectors.data[0].embedding) == 384
        online = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        assert online.choices[0].message.content == f"auth=Bearer {USER_KEY}"
    finally:
        server.stop()


def test_llm_model_dict_from_the_environment_is_imported_instead(tmp_path):
    port = free_port()
    project = old_project_copy(tmp_path, port)
    override = {"qwen-local": {"local_model_path": "SmolLM2-135M-Instruct.Q4_1.gguf",
                               "api_base_url": f"http://127.0.0.1:{port}/v1",
                               "api_key": "EMPTY"}}
    config = import_and_check(project, {"llm_model_dict": json.dumps(override),
                                        "LLM_MODEL": "qwen-local"})
    models = {model["name"]: model for model in config["models"]}
    assert "smollm2-135m" not in models and "gpt-4" not in models
    assert models["qwen-local"]["engine"] == "llamacpp"
    assert models["qwen-local"]["path"] == \
        f"{project}/llm_models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert models["qwen-local"].get("autostart", True) is True
