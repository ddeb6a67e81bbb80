"""import-config runs the old `configs` package as the old service did (in a separate,
time-limited process) and maps what it computed; when running fails it says why and
reads the files without running them."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest
from typer.testing import CliRunner

from fixtures.old_project_copy import old_project_copy
from modelport.cli.main import app
from modelport.config import load_config
from modelport.gateway.build import validate_startup
from modelport.importer import ImportResult, NothingToImport, import_config
from support.server import free_port

API_PORT = 18888  # the copy's FSCHAT_OPENAI_API port, and that of its local api_base_urls
USER_KEY = "sk-user-exported-0123456789"


def models_by_name(result: ImportResult) -> dict[str, dict]:
    return {model["name"]: model for model in result.config_dict["models"]}


def write_configs(tmp_path: Path, files: dict[str, str]) -> Path:
    """A small old project: <tmp>/proj/configs/<name> for each file."""
    configs = tmp_path / "proj" / "configs"
    configs.mkdir(parents=True)
    for name, source in files.items():
        (configs / name).write_text(textwrap.dedent(source), encoding="utf-8")
    return configs


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return old_project_copy(tmp_path_factory.mktemp("old"), API_PORT)


@pytest.fixture(scope="module")
def imported(project) -> ImportResult:
    # the user exported the OpenAI key the old config reads with os.environ.get
    with mock.patch.dict(os.environ, {"OPENAI_API_KEY": USER_KEY}):
        return import_config([project / "configs" / "model_config.py",
                              project / "configs" / "server_config.py"])


def test_the_configs_package_ran_in_the_project(imported, project):
    assert imported.how == f"ran configs.model_config, configs.server_config in {project}"
    assert (project / "logs").is_dir()  # default_config.py's own side effect, as before


def test_local_model_paths_come_out_of_the_rewriting_loop(imported, project):
    local = models_by_name(imported)["smollm2-135m"]
    assert local["engine"] == "llamacpp"
    assert local["path"] == f"{project}/llm_models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert imported.config_dict["server"] == {"models_dir": f"{project}/llm_models",
                                              "port": API_PORT}


def test_worker_settings_apply_and_only_llm_model_starts(imported):
    models = models_by_name(imported)
    local = models["smollm2-135m"]
    assert (local["host"], local["port"], local["parallel"]) == ("127.0.0.1", 20057, 4)
    assert local["device"] == "cpu"  # LLM_DEVICE: the real torch check on this machine
    assert "autostart" not in local
    assert all(models[name]["autostart"] is False for name in
               ("smollm2-vllm", "gpt-4", "deepseek-chat", "openai-api", "zhipu-api", "example"))


def test_vllm_dict_wins_for_the_same_name(imported, project):
    vllm = models_by_name(imported)["smollm2-vllm"]
    assert vllm["engine"] == "vllm"
    assert vllm["path"] == f"{project}/llm_models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert vllm["gpu_memory_utilization"] == 0.5
    assert vllm["extra_args"] == ["--max-num-seqs", "16"]
    row = next(m for m in imported.models if m.name == "smollm2-vllm")
    assert row.origin == "llm_model_dict['smollm2-vllm']"
    assert "VLLM_MODEL_DICT['smollm2-vllm']" in row.also


def test_online_models_by_api_base_url(imported):
    models = models_by_name(imported)
    # the missing optional package inside `try` took the config's own fallback branch
    assert models["gpt-4"]["base_url"] == "https://api.openai.com/v1"
    # read from the user's environment by the old file: the same variable, never the key
    assert models["gpt-4"]["api_key"] == "${OPENAI_API_KEY:-}"
    assert USER_KEY not in imported.yaml_text
    # os.environ.get("DEEPSEEK_API_BASE") was unset: the URL is left to that variable
    assert models["deepseek-chat"]["base_url"] == "${DEEPSEEK_API_BASE}"
    assert models["deepseek-chat"]["api_key"] == "${DEEPSEEK_API_KEY:-}"
    assert "DEEPSEEK_API_BASE" in imported.env_vars
    assert any("read from DEEPSEEK_API_BASE" in w for w in imported.warnings)


def test_online_llm_model_vendors_and_plugins(imported):
    models = models_by_name(imported)
    assert models["zhipu-api"]["vendor"] == "zhipu"
    assert models["zhipu-api"]["upstream_model"] == "glm-4"
    assert models["openai-api"]["vendor"] == "openai"
    example = models["example"]
    assert (example["engine"], example["provider"]) == ("plugin", "ExampleWorker")
    assert example["options"] == {"version": "gpt-3.5-turbo"}


def test_embeddings_come_from_local_config_json_and_the_embeddings_folder(imported, project):
    embeddings = [m for m in imported.models if m.kind == "embedding"]
    assert [m.entry for m in embeddings] == [{
        "name": "all-MiniLM-L6-v2", "engine": "sentence-transformers",
        "path": f"{project}/embedding_models/all-MiniLM-L6-v2", "device": "cpu"}]


def test_environment_json_overrides_the_dict_as_it_did(project, monkeypatch):
    monkeypatch.setenv("llm_model_dict", '{"qwen-local": {"local_model_path": '
                       '"SmolLM2-135M-Instruct.Q4_1.gguf", "api_base_url": '
                       f'"http://127.0.0.1:{API_PORT}/v1", "api_key": "EMPTY"}}}}')
    monkeypatch.setenv("LLM_MODEL", "qwen-local")
    result = import_config([project / "configs"])  # the folder finds both files
    models = models_by_name(result)
    assert "smollm2-135m" not in models and "gpt-4" not in models
    assert models["qwen-local"]["path"] == \
        f"{project}/llm_models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "autostart" not in models["qwen-local"]
    assert models["smollm2-vllm"]["engine"] == "vllm"  # VLLM_MODEL_DICT is its own entry


def test_missing_modules_are_stood_in_except_inside_try(tmp_path):
    configs = write_configs(tmp_path, {
        "helpers.py": 'PREFIX = "/srv/llm"\n',
        "model_config.py": """
            import not_installed_anywhere_a
            from not_installed_anywhere_b.sub import thing
            from .helpers import PREFIX
            try:
                import not_installed_anywhere_c
                BASE = "https://internal.example/v1"
            except ImportError:
                BASE = "https://fallback.example/v1"
            LLM_DEVICE = "cuda" if not_installed_anywhere_a.cuda.is_available() else "cpu"
            llm_model_dict = {
                "m": {"local_model_path": PREFIX + "/m.gguf",
                      "api_base_url": "http://localhost:8888/v1", "api_key": "EMPTY"},
                "o": {"local_model_path": "o", "api_base_url": BASE, "api_key": ""},
            }
            THING = thing
        """})
    result = import_config([configs / "model_config.py"])
    models = models_by_name(result)
    assert result.how.startswith("ran configs.model_config")
    assert models["m"]["path"] == "/srv/llm/m.gguf" and models["m"]["device"] == "cpu"
    assert models["o"]["base_url"] == "https://fallback.example/v1"
    stood_in = next(w for w in result.warnings if "stood in" in w)
    assert "not_installed_anywhere_a" in stood_in and "not_installed_anywhere_b" in stood_in
    assert "not_installed_anywhere_c" not in stood_in


def test_a_failing_config_is_read_without_running_and_says_why(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": """
        llm_model_dict = {"m": {"local_model_path": "THUDM/chatglm2-6b",
                                "api_base_url": "http://localhost:8888/v1"}}
        raise RuntimeError("the model database is unreachable")
    """})
    result = import_config([configs / "model_config.py"])
    assert "RuntimeError: the model database is unreachable" in result.how
    assert any("running the old config failed (RuntimeError: the model database is "
               "unreachable)" in w for w in result.warnings)
    assert models_by_name(result)["m"]["path"] == "THUDM/chatglm2-6b"  # read statically


def test_a_config_that_runs_too_long_is_stopped(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": """
        import time
        MODEL_PATH = {"llm_model": {"glm": "THUDM/chatglm3-6b"}}
        time.sleep(60)
    """})
    started = time.monotonic()
    result = import_config([configs / "model_config.py"], timeout=2)
    assert time.monotonic() - started < 20
    assert "did not finish within 2 s" in result.how
    assert models_by_name(result)["glm"]["path"] == "THUDM/chatglm3-6b"


def test_an_interpreter_that_cannot_start_is_a_reason_too(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": 'MODEL_PATH = {"llm_model": '
                                                          '{"glm": "THUDM/chatglm3-6b"}}\n'})
    result = import_config([configs / "model_config.py"], python=str(tmp_path / "no-python"))
    assert "cannot start" in result.how and "no-python" in result.how
    assert "glm" in models_by_name(result)


def test_zero_models_is_an_error_that_says_what_was_read(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": """
        import os, json
        llm_model_dict = json.loads(os.environ.get("llm_model_dict")) if os.environ.get("llm_model_dict") else {}
        ONLINE_LLM_MODEL = {"custom": {"api_key": ""}}
    """})
    with pytest.raises(NothingToImport) as raised:
        import_config([configs / "model_config.py"])
    message = str(raised.value)
    assert "llm_model_dict: 0 entries" in message and "VLLM_MODEL_DICT: not set" in message
    assert "ONLINE_LLM_MODEL['custom']: neither an api_base_url nor a provider class" in message
    assert "Nothing was written" in message


def test_cli_zero_models_exits_1_and_writes_nothing(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": "llm_model_dict = {}\n"})
    output = tmp_path / "modelport.yaml"
    result = CliRunner().invoke(app, ["import-config", str(configs / "model_config.py"),
                                      "-o", str(output)])
    assert result.exit_code == 1
    assert "no model found" in result.output and not output.exists()


def test_cli_dry_run_prints_the_table_and_writes_nothing(tmp_path):
    configs = write_configs(tmp_path, {"model_config.py": """
        llm_model_dict = {"glm": {"local_model_path": "THUDM/chatglm3-6b",
                                  "api_base_url": "http://localhost:8888/v1"},
                          "gone": {"api_key": "EMPTY"}}
    """})
    output = tmp_path / "modelport.yaml"
    result = CliRunner().invoke(app, ["import-config", str(configs / "model_config.py"),
                                      "-o", str(output), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "llm_model_dict['glm']" in result.output
    assert "glm: auto, THUDM/chatglm3-6b" in result.output
    assert "nothing: neither a local_model_path" in result.output
    assert f"dry run: {output} was not written" in result.output and not output.exists()


def test_an_unset_base_url_variable_blocks_only_a_model_that_is_served(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_TEST_UNSET_BASE", raising=False)
    path = tmp_path / "modelport.yaml"
    path.write_text(f"server: {{port: {free_port()}}}\nmodels:\n"
                    "  - {name: up, engine: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
                    "  - {name: later, engine: openai, base_url: '${MP_TEST_UNSET_BASE}',\n"
                    "     autostart: false}\n")
    config = load_config(path)
    assert not validate_startup(config).problems
    served = validate_startup(config, ["later"]).problems
    assert any("MP_TEST_UNSET_BASE is not set" in problem for problem in served)
