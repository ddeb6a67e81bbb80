"""import-config reads a LiteLLM proxy config.yaml: model_list, router_settings,
litellm_settings, general_settings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from modelport.config import parse_config
from modelport.importer import ImportResult, NothingToImport, import_config

LITERAL_SECRETS = ["sk-azure-literal-0123", "redis-literal-pw"]
CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      timeout: 120
      rpm: 600
  - model_name: gpt-4o-azure
    litellm_params:
      model: azure/gpt4o-prod
      api_base: https://contoso.openai.azure.com/
      api_version: "2024-10-21"
      api_key: sk-azure-literal-0123
  - model_name: llama-3
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3-8B-Instruct
      api_base: http://10.0.0.5:8000/v1
      weight: 2
  - model_name: llama-3
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3-8B-Instruct
      api_base: http://10.0.0.6:8000/v1
      api_key: os.environ/VLLM_B_KEY
      weight: 1
  - model_name: local-ollama
    litellm_params:
      model: ollama/qwen2.5
  - model_name: deepseek-chat
    litellm_params:
      model: deepseek/deepseek-chat
      api_key: os.environ/DEEPSEEK_API_KEY
    model_info:
      input_cost_per_token: 0.00000027
      output_cost_per_token: 0.0000011
  - model_name: embedder
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: os.environ/OPENAI_API_KEY
    model_info:
      mode: embedding
  - model_name: claude-on-bedrock
    litellm_params:
      model: bedrock/anthropic.claude-3-sonnet
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 3
  allowed_fails: 2
  cooldown_time: 30
  redis_host: os.environ/REDIS_HOST
  redis_port: 6379
  redis_password: redis-literal-pw
litellm_settings:
  fallbacks: [{"gpt-4o": ["deepseek-chat", "not-a-model"]}]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def imported(tmp_path) -> ImportResult:
    return import_config([write(tmp_path, "config.yaml", CONFIG)])


def models_by_name(result: ImportResult) -> dict[str, dict]:
    return {model["name"]: model for model in result.config_dict["models"]}


def test_model_list_entries_become_online_models(imported):
    models = models_by_name(imported)
    assert models["gpt-4o"] == {
        "name": "gpt-4o", "engine": "openai", "vendor": "openai",
        "api_key": "${OPENAI_API_KEY}", "read_timeout": 120, "retries": {"attempts": 4},
        "cooldown": {"failures": 2, "seconds": 30}, "fallbacks": ["deepseek-chat"]}
    azure = models["gpt-4o-azure"]
    assert azure["vendor"] == "azure" and azure["upstream_model"] == "gpt4o-prod"
    assert azure["url_params"] == {"resource": "contoso", "api_version": "2024-10-21"}
    assert models["local-ollama"]["base_url"] == "http://localhost:11434/v1"
    assert models["local-ollama"]["upstream_model"] == "qwen2.5"
    assert models["deepseek-chat"]["vendor"] == "deepseek"
    assert models["deepseek-chat"]["price"] == pytest.approx({"input": 0.27, "output": 1.1})
    assert next(m for m in imported.models if m.name == "embedder").kind == "embedding"


def test_entries_with_one_name_become_deployments_of_one_model(imported):
    llama = models_by_name(imported)["llama-3"]
    assert llama["base_url"] == "http://10.0.0.5:8000/v1"
    assert llama["upstream_model"] == "meta-llama/Llama-3-8B-Instruct"
    assert llama["deployments"] == [{"url": "http://10.0.0.6:8000/v1",
                                     "api_key": "${VLLM_B_KEY}", "weight": 1}]
    assert llama["strategy"] == "weighted"  # simple-shuffle picks by weight


def test_secrets_become_variables_and_are_never_copied(imported):
    server = imported.config_dict["server"]
    assert server["master_key"] == "${LITELLM_MASTER_KEY}"
    assert server["redis_url"] == "redis://:${MODELPORT_REDIS_PASSWORD}@${REDIS_HOST}:6379"
    assert models_by_name(imported)["gpt-4o-azure"]["api_key"] == \
        "${MODELPORT_GPT_4O_AZURE_API_KEY}"
    everything = imported.yaml_text + "\n".join(imported.warnings) + str(imported.env_vars)
    for secret in LITERAL_SECRETS:
        assert secret not in everything
    assert {"OPENAI_API_KEY", "VLLM_B_KEY", "MODELPORT_GPT_4O_AZURE_API_KEY",
            "MODELPORT_REDIS_PASSWORD"} <= set(imported.env_vars)


def test_what_does_not_carry_over_is_reported(imported):
    assert [s.origin for s in imported.skipped] == ["model_list[7] (claude-on-bedrock)"]
    assert "provider 'bedrock' has no api_base" in imported.skipped[0].reason
    assert any("rpm was dropped" in w for w in imported.warnings)


def test_the_result_loads_once_the_variables_are_exported(imported, monkeypatch):
    for var in [*imported.env_vars, "REDIS_HOST", "LITELLM_MASTER_KEY", "DEEPSEEK_API_KEY"]:
        monkeypatch.setenv(var, "exported")
    config = parse_config(yaml.safe_load(imported.yaml_text), "imported")
    assert config.model("llama-3").deployments[0].weight == 1
    assert imported.how == "read as a LiteLLM proxy config"
    assert imported.yaml_text.startswith("# modelport.yaml imported from a LiteLLM proxy config")


def test_detected_by_content_without_a_yaml_extension(tmp_path):
    path = write(tmp_path, "proxy_config", "model_list:\n  - model_name: a\n"
                 "    litellm_params: {model: openai/a, api_base: 'http://127.0.0.1:9/v1'}\n")
    assert models_by_name(import_config([path]))["a"]["base_url"] == "http://127.0.0.1:9/v1"


def test_a_yaml_without_model_list_and_an_empty_list_are_errors(tmp_path):
    with pytest.raises(Exception, match="has no model_list"):
        import_config([write(tmp_path, "other.yaml", "server: {port: 1}\n")])
    with pytest.raises(NothingToImport, match="model_list has 0 entries"):
        import_config([write(tmp_path, "empty.yaml", "model_list: []\n")])
