from __future__ import annotations

import pytest

from modelport.config import load_config, parse_config
from modelport.config.defaults import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, default_config
from modelport.errors import ConfigError


def llama(**fields):
    return {"name": "m", "engine": "llamacpp", "path": "m.gguf", **fields}


def test_defaults_serve_the_two_packaged_models():
    config = default_config()
    assert [m.name for m in config.models] == [DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL]
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8888)
    assert [m.engine for m in config.models] == ["llamacpp", "sentence-transformers"]


def test_env_interpolation_and_default(monkeypatch):
    monkeypatch.setenv("MP_KEY", "secret")
    config = parse_config({"server": {"api_keys": ["${MP_KEY}", "${MP_OTHER:-fallback}"]}})
    assert config.server.api_keys == ["secret", "fallback"]


def test_unset_env_var_names_the_variable_and_field(monkeypatch):
    monkeypatch.delenv("MP_NOPE", raising=False)
    config = parse_config({"models": [{"name": "x", "engine": "openai",
                                       "base_url": "http://a/v1", "api_key": "${MP_NOPE}"}]})
    problems, notes = config.unset_variables(config.models)
    assert len(problems) == 1 and not notes
    assert "MP_NOPE is not set" in problems[0] and "models.0.api_key" in problems[0]


def test_unset_env_var_of_a_model_that_does_not_start_is_only_a_note(monkeypatch):
    monkeypatch.delenv("MP_NOPE", raising=False)
    config = parse_config({"models": [
        {"name": "x", "engine": "openai", "base_url": "http://a/v1", "api_key": "${MP_NOPE}",
         "autostart": False},
        {"name": "y", "engine": "openai", "base_url": "http://a/v1"}]})
    problems, notes = config.unset_variables([config.models[1]])
    assert not problems and "MP_NOPE is not set" in notes[0]


def test_unset_env_var_in_an_invalid_field_is_named_with_the_field(monkeypatch):
    monkeypatch.delenv("MP_PORT", raising=False)
    with pytest.raises(ConfigError) as error:
        parse_config({"server": {"port": "${MP_PORT}"}})
    assert "server.port" in str(error.value) and "MP_PORT is not set" in str(error.value)


def test_unknown_field_suggests_the_right_name():
    with pytest.raises(ConfigError) as error:
        parse_config({"models": [llama(contxt_length=10)]})
    message = str(error.value)
    assert "models[0] (name 'm').contxt_length" in message
    assert "did you mean 'context_length'" in message


def test_each_invalid_field_gets_its_own_line():
    with pytest.raises(ConfigError) as error:
        parse_config({"server": {"port": "abc"},
                      "models": [llama(parallel=0), {"name": "b", "engine": "magic"},
                                 {"name": "c", "engine": "openai"}]})
    lines = str(error.value).splitlines()
    assert lines[0].endswith("4 invalid field(s)")
    assert any(line.strip().startswith("server.port:") for line in lines)
    assert any("models[0] (name 'm').parallel: " in line and "greater than or equal to 1" in line
               for line in lines)
    assert any("models[1] (name 'b'): `engine` must be one of" in line for line in lines)
    assert any("models[2] (name 'c').base_url: required field is missing" in line for line in lines)


def test_duplicate_names_and_aliases_are_rejected():
    with pytest.raises(ConfigError, match="'dup' is used by both 'a' and 'b'"):
        parse_config({"models": [llama(name="a", aliases=["dup"]), llama(name="b", aliases=["dup"])]})


def test_base_url_must_be_http():
    with pytest.raises(ConfigError, match="must start with http"):
        parse_config({"models": [{"name": "x", "engine": "openai", "base_url": "api.x.com"}]})


def test_model_lookup_by_alias_and_unknown_name():
    config = parse_config({"models": [llama(aliases=["gpt-3.5-turbo"])]})
    assert config.model("gpt-3.5-turbo").name == "m"
    with pytest.raises(ConfigError, match="no model named 'zzz'.*configured: m"):
        config.model("zzz")


def test_load_config_resolves_models_dir_next_to_the_file(tmp_path):
    (tmp_path / "modelport.yaml").write_text("server:\n  models_dir: weights\nmodels: []\n")
    config = load_config(tmp_path / "modelport.yaml")
    assert config.models_dir_path() == tmp_path / "weights"


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
