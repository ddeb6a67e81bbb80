"""import-config: the old system's Python config becomes a modelport.yaml that loads."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.importer import ImportResult, import_old_config as run_or_read_old_config

def import_old_config(*files: Path) -> ImportResult:
    """These tests cover the reader that never runs the files (the fallback and --static)."""
    return run_or_read_old_config(*files, run=False)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "old_config"
MODEL_CONFIG = FIXTURES / "model_config.py"
SERVER_CONFIG = FIXTURES / "server_config.py"
LITERAL_SECRETS = [
    "sk-fixture-openai-0123456789abcdef",
    "fixture-zhipu-key.abcdef0123456789",
    "fixture-qianfan-ak-0123",
    "fixture-qianfan-sk-4567",
]


@pytest.fixture(scope="module")
def imported() -> ImportResult:
    return import_old_config(MODEL_CONFIG, SERVER_CONFIG)


def models_by_name(result: ImportResult) -> dict[str, dict]:
    return {model["name"]: model for model in result.config_dict["models"]}


def line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def load_with_env(result: ImportResult, monkeypatch: pytest.MonkeyPatch):
    """What `modelport serve` would do once the user exported the listed variables."""
    for var in result.env_vars:
        monkeypatch.setenv(var, "exported-by-test")
    return parse_config(yaml.safe_load(result.yaml_text), "imported")


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# -- the documented example ---------------------------------------------------------------


def test_yaml_text_loads_as_the_config_dict_and_passes_the_schema(imported, monkeypatch):
    assert yaml.safe_load(imported.yaml_text) == imported.config_dict
    config = load_with_env(imported, monkeypatch)
    assert {m.name for m in config.models} == set(models_by_name(imported))
    assert config.model("zhipu-api").api_key == "exported-by-test"


def test_the_old_files_are_parsed_not_executed(imported):
    # model_config.py imports a module that does not exist: running it would raise
    assert "modelport_fixture_module_that_must_never_be_imported" not in sys.modules
    assert "chatglm-6b" in models_by_name(imported)


def test_local_models_keep_their_paths_as_written(imported):
    models = models_by_name(imported)
    assert models["chatglm-6b"]["engine"] == "auto"
    assert models["chatglm-6b"]["path"] == "THUDM/chatglm-6b"
    assert models["qwen-7b-chat"]["path"] == "/data/models/Qwen/Qwen-7B-Chat"
    assert models["baichuan2-13b-chat"]["path"] == "~/models/Baichuan2-13B-Chat"
    gguf = models["tinyllama-gguf"]
    assert gguf["engine"] == "llamacpp" and gguf["path"].endswith(".Q4_K_M.gguf")


def test_models_dir_comes_from_model_root_path_evaluated_from_file(imported):
    # os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llm_models")
    assert imported.config_dict["server"]["models_dir"] == str(FIXTURES.parent / "llm_models")
    assert imported.config_dict["server"]["port"] == 8888


def test_vllm_dict_takes_precedence_and_adds_its_own_models(imported):
    models = models_by_name(imported)
    both = models["chatglm2-6b"]
    assert both["engine"] == "vllm"
    assert both["path"] == "THUDM/chatglm2-6b"  # the path VLLM_MODEL_DICT gives
    assert models["Qwen-14B-Chat"] == {
        "name": "Qwen-14B-Chat", "engine": "vllm", "path": "Qwen/Qwen-14B-Chat",
        "autostart": False,
    }
    assert "VLLM_MODEL_DICT" in imported.yaml_text.split("name: chatglm2-6b")[0].rsplit(
        "\n\n", 1)[-1]


def test_worker_host_port_and_vllm_options(imported):
    vllm_model = models_by_name(imported)["chatglm2-6b"]
    assert vllm_model["host"] == "127.0.0.1" and vllm_model["port"] == 20057
    assert vllm_model["tensor_parallel_size"] == 2
    assert vllm_model["gpu_memory_utilization"] == 0.85
    assert vllm_model["extra_args"] == ["--max-num-seqs", "128", "--enforce-eager"]
    assert models_by_name(imported)["codellama-34b-int4"]["port"] == 20058


def test_default_worker_port_is_not_given_to_every_model(imported):
    ports = [m.get("port") for m in imported.config_dict["models"]]
    assert 20002 not in ports
    assert ports.count(None) == len(ports) - 2


def test_auto_engine_options_come_from_the_worker_entry(imported):
    chatglm = models_by_name(imported)["chatglm-6b"]
    assert chatglm["device"] == "cuda"
    assert chatglm["parallel"] == 5  # limit_worker_concurrency of the "default" worker
    assert chatglm["options"] == {"load_8bit": True, "gpus": "0,1", "max_gpu_memory": "20GiB"}
    assert models_by_name(imported)["codellama-34b-int4"]["options"] == {"cpu_offloading": True}


def test_only_the_models_the_old_config_started_autostart(imported):
    models = models_by_name(imported)
    for started in ("chatglm2-6b", "zhipu-api", "openai-api", "m3e-base"):
        assert models[started].get("autostart", True) is True, started
    for idle in ("chatglm-6b", "qwen-7b-chat", "gpt-4", "qwen-api", "bge-large-zh", "text2vec"):
        assert models[idle]["autostart"] is False, idle


def test_online_models_use_the_vendor_openai_compatible_endpoint(imported):
    models = models_by_name(imported)
    assert models["openai-api"] == {
        "name": "openai-api", "engine": "openai", "vendor": "openai",
        "upstream_model": "gpt-3.5-turbo", "api_key": "${MODELPORT_OPENAI_API_KEY}",
        "proxy": "http://proxy.internal:3128",
    }
    assert models["zhipu-api"]["vendor"] == "zhipu" and "base_url" not in models["zhipu-api"]
    assert models["zhipu-api"]["upstream_model"] == "glm-4"
    assert models["qwen-api"]["vendor"] == "qwen"
    assert models["qianfan-api"]["vendor"] == "qianfan"
    assert "# old provider: ChatGLMWorker" in imported.yaml_text


def test_a_provider_class_without_an_openai_endpoint_becomes_a_plugin(imported):
    tiangong = models_by_name(imported)["tiangong-api"]
    assert tiangong["engine"] == "plugin" and tiangong["provider"] == "TianGongWorker"
    assert tiangong["options"] == {"version": "SkyChat-MegaVerse"}
    assert tiangong["autostart"] is False
    assert any("tiangong-api" in w and "port the class" in w for w in imported.warnings)


def test_literal_keys_become_env_references_and_never_appear(imported):
    models = models_by_name(imported)
    assert models["zhipu-api"]["api_key"] == "${MODELPORT_ZHIPU_API_KEY}"
    assert models["qianfan-api"]["api_key"] == "${MODELPORT_QIANFAN_API_KEY}"
    # os.environ.get in the old file: the same variable, optional as it was there
    assert models["gpt-4"]["api_key"] == "${OPENAI_API_KEY:-}"
    assert models["qwen-api"]["api_key"] == "${MODELPORT_QWEN_API_KEY:-}"  # empty there
    assert {"MODELPORT_ZHIPU_API_KEY", "MODELPORT_QIANFAN_API_KEY", "MODELPORT_OPENAI_API_KEY",
            "OPENAI_API_KEY"} <= set(imported.env_vars)
    everything = imported.yaml_text + "\n".join(imported.warnings) + str(imported.env_vars)
    for secret in LITERAL_SECRETS:
        assert secret not in everything
    assert "export MODELPORT_ZHIPU_API_KEY=" in imported.yaml_text


def test_empty_keys_of_local_models_are_dropped(imported):
    local = [m for m in imported.config_dict["models"] if m["engine"] not in ("openai", "plugin")]
    assert local and all("api_key" not in m for m in local)
    assert "EMPTY" not in imported.yaml_text


def test_embedding_models(imported):
    models = models_by_name(imported)
    # relative embedding paths are in the project's embedding_models folder, not llm_models
    embeddings = FIXTURES.parent / "embedding_models"
    assert models["m3e-base"] == {"name": "m3e-base", "engine": "sentence-transformers",
                                  "path": str(embeddings / "moka-ai/m3e-base"), "device": "cpu"}
    assert models["text2vec"]["path"] == str(embeddings / "GanymedeNil/text2vec-large-chinese")
    assert models["bge-large-zh"]["engine"] == "sentence-transformers"


def test_warnings_name_file_line_and_variable(imported):
    device_line = line_of(MODEL_CONFIG, "LLM_DEVICE = detect_device()")
    assert f"model_config.py line {device_line}: LLM_DEVICE = detect_device(): " \
           "not a literal, skipped" in imported.warnings
    default_device = line_of(SERVER_CONFIG, '"device": LLM_DEVICE')
    assert any(w.startswith(f"server_config.py line {default_device}: "
                            "FSCHAT_MODEL_WORKERS['default']['device']") and "LLM_DEVICE" in w
               for w in imported.warnings)
    template_line = line_of(SERVER_CONFIG, '"conv_template"')
    assert any(w.startswith(f"server_config.py line {template_line}:") and "chat template" in w
               for w in imported.warnings)
    gptq_line = line_of(SERVER_CONFIG, '"gptq_wbits": 4')
    assert any(w.startswith(f"server_config.py line {gptq_line}:") and "gptq_wbits" in w
               for w in imported.warnings)
    assert any("tiangong-api" in w and "TianGongWorker" in w for w in imported.warnings)
    assert any("secret_key was dropped" in w for w in imported.warnings)
    assert any("not-a-configured-model" in w for w in imported.warnings)


# -- other layouts and rules, on small files ----------------------------------------------


def test_a_config_that_would_have_side_effects_is_not_run(tmp_path):
    marker = tmp_path / "EXECUTED"
    config = write(tmp_path, "model_config.py", f"""
        open({str(marker)!r}, "w").write("ran")
        MODEL_PATH = {{"llm_model": {{"qwen": "Qwen/Qwen-7B-Chat"}}}}
    """)
    result = import_old_config(config)
    assert not marker.exists()
    assert result.config_dict["models"][0]["path"] == "Qwen/Qwen-7B-Chat"


def test_newer_model_path_layout_with_llm_models_list(tmp_path, monkeypatch):
    config = write(tmp_path, "model_config.py", """
        MODEL_ROOT_PATH = ""
        ROOT = "/srv/models"
        MODEL_PATH = {
            "embed_model": {"bge-large-zh-v1.5": ROOT + "/BAAI/bge-large-zh-v1.5"},
            "llm_model": {
                "chatglm3-6b": f"{ROOT}/THUDM/chatglm3-6b",
                "Qwen-1_8B-Chat": "Qwen/Qwen-1_8B-Chat",
            },
        }
        LLM_MODELS = ["chatglm3-6b", "missing-model"]
        VLLM_MODEL_DICT = {"Qwen-1_8B-Chat": "Qwen/Qwen-1_8B-Chat"}
        EMBEDDING_MODEL = "bge-large-zh-v1.5"
    """)
    result = import_old_config(config)
    models = models_by_name(result)
    assert "models_dir" not in result.config_dict["server"]  # "" kept modelport's default
    assert models["chatglm3-6b"]["path"] == "/srv/models/THUDM/chatglm3-6b"
    assert models["Qwen-1_8B-Chat"]["engine"] == "vllm"
    assert models["Qwen-1_8B-Chat"]["autostart"] is False
    assert models["bge-large-zh-v1.5"]["path"] == "/srv/models/BAAI/bge-large-zh-v1.5"
    assert "autostart" not in models["bge-large-zh-v1.5"]
    assert any("LLM_MODELS names 'missing-model', which is not an imported LLM model" in w
               for w in result.warnings)
    load_with_env(result, monkeypatch)


def test_environment_lookups_become_references(tmp_path, monkeypatch):
    config = write(tmp_path, "model_config.py", """
        import os
        MODEL_ROOT_PATH = os.environ.get("MODELS_HOME", "/opt/llm_models")
        ONLINE_LLM_MODEL = {
            "openai-api": {
                "model_name": "gpt-4o",
                "api_base_url": "https://api.openai.com/v1",
                "api_key": os.getenv("OPENAI_API_KEY", "sk-fallback-key-in-the-file"),
                "openai_proxy": os.environ.get("OPENAI_PROXY"),
            },
            "zhipu-api": {"api_key": os.environ["ZHIPUAI_API_KEY"], "provider": "ZhipuWorker"},
        }
    """)
    result = import_old_config(config)
    models = models_by_name(result)
    assert result.config_dict["server"]["models_dir"] == "${MODELS_HOME:-/opt/llm_models}"
    assert models["openai-api"]["api_key"] == "${OPENAI_API_KEY:-}"
    assert "proxy" not in models["openai-api"]
    assert any("`proxy: ${OPENAI_PROXY}`" in w for w in result.warnings)
    assert models["zhipu-api"]["api_key"] == "${ZHIPUAI_API_KEY}"  # os.environ[...] required it
    assert "sk-fallback-key-in-the-file" not in result.yaml_text
    assert any("fallback key" in w for w in result.warnings)
    load_with_env(result, monkeypatch)


def test_one_literal_key_shared_by_two_models_gives_one_variable(tmp_path):
    config = write(tmp_path, "model_config.py", """
        KEY = "sk-shared-0000"
        llm_model_dict = {
            "gpt-4o": {"api_base_url": "https://api.openai.com/v1", "api_key": KEY},
            "gpt-4o-mini": {"api_base_url": "https://api.openai.com/v1", "api_key": KEY},
        }
    """)
    models = models_by_name(import_old_config(config))
    assert models["gpt-4o"]["api_key"] == models["gpt-4o-mini"]["api_key"] \
        == "${MODELPORT_GPT_4O_API_KEY}"


def test_a_model_behind_another_local_openai_server_is_an_upstream(tmp_path):
    config = write(tmp_path, "model_config.py", """
        llm_model_dict = {
            "served-elsewhere": {"local_model_path": "", "api_key": "EMPTY",
                                 "api_base_url": "http://127.0.0.1:8000/v1"},
            "served-here": {"local_model_path": "THUDM/chatglm2-6b", "api_key": "EMPTY",
                            "api_base_url": "http://127.0.0.1:8888/v1"},
        }
    """)
    models = models_by_name(import_old_config(config))
    assert models["served-elsewhere"]["engine"] == "openai"
    assert models["served-elsewhere"]["base_url"] == "http://127.0.0.1:8000/v1"
    assert models["served-elsewhere"]["api_key"] == "${MODELPORT_SERVED_ELSEWHERE_API_KEY:-}"
    assert models["served-here"]["engine"] == "auto"


def test_infer_turbo_vllm_and_num_gpus_follow_fastchat(tmp_path):
    model_config = write(tmp_path, "model_config.py", """
        MODEL_PATH = {"llm_model": {"qwen": "Qwen/Qwen-7B-Chat", "glm": "THUDM/chatglm3-6b"}}
    """)
    server_config = write(tmp_path, "server_config.py", """
        FSCHAT_MODEL_WORKERS = {
            "default": {"num_gpus": 2},
            "qwen": {"infer_turbo": "vllm"},
        }
    """)
    models = models_by_name(import_old_config(model_config, server_config))
    assert models["qwen"]["engine"] == "vllm" and models["qwen"]["tensor_parallel_size"] == 2
    assert models["glm"]["options"] == {"gpus": "0,1"}


def test_invalid_names_are_renamed_and_kept_as_alias(tmp_path, monkeypatch):
    config = write(tmp_path, "model_config.py", """
        MODEL_PATH = {"llm_model": {"my model (v2)": "some/model"},
                      "embed_model": {"shared": "BAAI/bge-small-zh"}}
        llm_model_dict = {"shared": {"local_model_path": "THUDM/chatglm2-6b"}}
    """)
    result = import_old_config(config)
    models = models_by_name(result)
    renamed = models["my-model--v2-"]
    assert renamed["aliases"] == ["my model (v2)"]
    assert models["shared"]["engine"] == "auto"
    assert models["shared-embedding"]["engine"] == "sentence-transformers"
    assert any("renamed" in w for w in result.warnings)
    load_with_env(result, monkeypatch)


def test_values_set_in_if_blocks_are_reported(tmp_path):
    config = write(tmp_path, "model_config.py", """
        import torch
        LLM_DEVICE = "cpu"
        if torch.cuda.is_available():
            LLM_DEVICE = "cuda"
        MODEL_PATH = {"llm_model": {"glm": "THUDM/chatglm3-6b"}}
    """)
    result = import_old_config(config)
    assert "device" not in models_by_name(result)["glm"]  # it depends on the machine
    assert any(w.startswith("model_config.py line 5: LLM_DEVICE is set inside the `if` block")
               for w in result.warnings)


def test_azure_worker_uses_the_resource_v1_endpoint(tmp_path):
    config = write(tmp_path, "model_config.py", """
        ONLINE_LLM_MODEL = {"azure-api": {
            "deployment_name": "gpt4o-prod", "resource_name": "contoso",
            "api_version": "2024-02-01", "api_key": "azure-literal-key",
            "provider": "AzureWorker",
        }}
    """)
    result = import_old_config(config)
    azure = models_by_name(result)["azure-api"]
    assert azure["base_url"] == "https://contoso.openai.azure.com/openai/v1"
    assert azure["upstream_model"] == "gpt4o-prod"
    assert azure["api_key"] == "${MODELPORT_AZURE_API_KEY}"
    assert "azure-literal-key" not in result.yaml_text


def test_invalid_python_is_a_config_error_naming_the_line(tmp_path):
    config = write(tmp_path, "model_config.py", "llm_model_dict = {\n")
    with pytest.raises(ConfigError, match="line"):
        import_old_config(config)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        import_old_config(tmp_path / "nope.py")


def test_rerankers_are_imported_and_only_the_one_in_use_starts(tmp_path, monkeypatch):
    config = write(tmp_path, "model_config.py", """
        EMBEDDING_DEVICE = "cpu"
        USE_RERANKER = True
        RERANKER_MODEL = "bge-reranker-large"
        RERANKER_MAX_LENGTH = 1024
        MODEL_PATH = {
            "embed_model": {"bge-large-zh-v1.5": "BAAI/bge-large-zh-v1.5"},
            "llm_model": {"chatglm3-6b": "THUDM/chatglm3-6b"},
            "reranker": {
                "bge-reranker-large": "BAAI/bge-reranker-large",
                "bge-reranker-base": "BAAI/bge-reranker-base",
                "bge-reranker-v2-gguf": "/models/bge-reranker-v2-m3-Q8_0.gguf",
            },
        }
        LLM_MODELS = ["chatglm3-6b"]
    """)
    result = import_old_config(config)
    models = models_by_name(result)

    assert models["bge-reranker-large"] == {
        "name": "bge-reranker-large", "engine": "cross-encoder", "path": "BAAI/bge-reranker-large",
        "device": "cpu", "max_input_tokens": 1024}
    assert models["bge-reranker-base"]["engine"] == "cross-encoder"
    assert models["bge-reranker-base"]["autostart"] is False
    gguf = models["bge-reranker-v2-gguf"]
    assert gguf["engine"] == "llamacpp" and gguf["reranking"] is True
    assert gguf["autostart"] is False
    assert not any("reranker" in warning for warning in result.warnings), result.warnings
    assert "not the RERANKER_MODEL in use" in result.yaml_text
    loaded = load_with_env(result, monkeypatch)
    assert loaded.model("bge-reranker-large").engine == "cross-encoder"
    assert loaded.model("bge-reranker-v2-gguf").reranking is True


def test_no_reranker_starts_when_use_reranker_is_off(tmp_path):
    config = write(tmp_path, "model_config.py", """
        USE_RERANKER = False
        RERANKER_MODEL = "bge-reranker-large"
        MODEL_PATH = {"reranker": {"bge-reranker-large": "BAAI/bge-reranker-large"}}
    """)
    model = models_by_name(import_old_config(config))["bge-reranker-large"]
    assert model["autostart"] is False and "max_input_tokens" not in model


def test_a_reranker_model_that_is_not_listed_is_reported(tmp_path):
    config = write(tmp_path, "model_config.py", """
        USE_RERANKER = True
        RERANKER_MODEL = "bge-reranker-huge"
        MODEL_PATH = {"reranker": {"bge-reranker-large": "BAAI/bge-reranker-large"}}
    """)
    result = import_old_config(config)
    assert any("RERANKER_MODEL names 'bge-reranker-huge', which is not in "
               "MODEL_PATH['reranker']" in warning for warning in result.warnings)
