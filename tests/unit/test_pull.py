"""modelport pull: path logic and the fast offline failure. Nothing is downloaded here."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from modelport.cli import pull as pull_module
from modelport.errors import ConfigError
from modelport.cli.pull import PullError, hub_reachable, pull, target_dir, validate_repo_id


@pytest.fixture
def no_network_env(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY",
                "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_target_dir_is_models_dir_org_name(tmp_path):
    assert target_dir("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == \
        tmp_path / "Qwen" / "Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize("repo_id", ["Qwen", "a/b/c", "../etc", "org/..", "org/na me",
                                     "-org/name", "org/name.", "org/a--b", "", "/name"])
def test_invalid_repo_ids_are_refused(repo_id, tmp_path):
    with pytest.raises(PullError, match="org/name"):
        target_dir(repo_id, tmp_path)


def test_valid_repo_id_parts():
    assert validate_repo_id("BAAI/bge-large-zh-v1.5") == ("BAAI", "bge-large-zh-v1.5")
    assert validate_repo_id("TheBloke/Llama_2.GGUF") == ("TheBloke", "Llama_2.GGUF")


def test_offline_variable_fails_at_once_and_names_the_target(no_network_env, tmp_path):
    no_network_env.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(PullError) as caught:
        pull("THUDM/chatglm2-6b", tmp_path)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert str((tmp_path / "THUDM" / "chatglm2-6b").resolve()) in message
    assert "HF_HUB_OFFLINE is set" in message and "copy the model folder" in message
    assert isinstance(caught.value, ConfigError)
    assert not (tmp_path / "THUDM").exists()


def test_unreachable_hub_fails_within_five_seconds(no_network_env, tmp_path):
    no_network_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(PullError, match="cannot be reached") as caught:
        pull("Qwen/Qwen2.5-0.5B-Instruct", tmp_path, filename="model.gguf")
    assert time.monotonic() - started < 5
    assert "Qwen/Qwen2.5-0.5B-Instruct/model.gguf" in str(caught.value)
    assert str(tmp_path.resolve() / "Qwen" / "Qwen2.5-0.5B-Instruct") in str(caught.value)


def test_a_hanging_connection_attempt_is_abandoned_after_the_timeout(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.monotonic()
    assert hub_reachable("huggingface.co", 443, timeout=0.2) is False
    assert time.monotonic() - started < 1


def test_the_probe_goes_to_the_https_proxy_when_one_is_set(no_network_env):
    no_network_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert pull_module._probe_address("https://huggingface.co") == ("proxy.internal", 3128)
    no_network_env.delenv("HTTPS_PROXY")
    assert pull_module._probe_address("https://hf-mirror.com") == ("hf-mirror.com", 443)


def test_file_names_outside_the_repo_are_refused(no_network_env, tmp_path):
    with pytest.raises(PullError, match="not a file name"):
        pull("org/name", tmp_path, filename="../../etc/passwd")


class FakeHub:
    """Stands in for huggingface_hub's download functions: records the call, downloads nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def snapshot_download(self, repo_id, **kwargs):
        self.calls.append(("snapshot", (repo_id,), kwargs))
        return str(kwargs["local_dir"])

    def hf_hub_download(self, repo_id, filename, **kwargs):
        self.calls.append(("file", (repo_id, filename), kwargs))
        return str(Path(kwargs["local_dir"]) / filename)


@pytest.fixture
def fake_hub(no_network_env):
    import huggingface_hub

    hub = FakeHub()
    no_network_env.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    no_network_env.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    no_network_env.setattr(pull_module, "offline_reason", lambda endpoint: None)
    return hub


def test_online_pull_downloads_the_snapshot_into_the_target(fake_hub, tmp_path):
    result = pull("BAAI/bge-m3", tmp_path, revision="main")
    target = tmp_path / "BAAI" / "bge-m3"
    assert result == target and target.is_dir()
    assert fake_hub.calls == [("snapshot", ("BAAI/bge-m3",),
                               {"revision": "main", "local_dir": target})]


def test_online_pull_of_one_file_returns_the_file(fake_hub, tmp_path):
    result = pull("Qwen/Qwen2.5-0.5B-Instruct-GGUF", tmp_path,
                  filename="qwen2.5-0.5b-instruct-q4_k_m.gguf")
    target = tmp_path / "Qwen" / "Qwen2.5-0.5B-Instruct-GGUF"
    assert result == target / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert fake_hub.calls[0][0] == "file" and fake_hub.calls[0][2]["local_dir"] == target

