"""Reading a config is three steps, each reading one thing: the environment, the file's
own content (the schema), the vendors file. The schema alone reads nothing else."""

from __future__ import annotations

import pytest

from modelport.config import Config, parse_config
from modelport.errors import ConfigError

VENDOR_MODEL = {"models": [{"name": "ds", "engine": "openai", "vendor": "deepseek",
                            "api_key": "sk-test"}]}


def test_the_schema_alone_leaves_vendors_and_folders_unresolved() -> None:
    config = Config.model_validate(VENDOR_MODEL)
    assert config.models[0].base_url is None
    assert config.base_dir == ""


def test_parsing_resolves_the_vendor_after_validation() -> None:
    config = parse_config(VENDOR_MODEL, base_dir="/srv/models")
    assert config.models[0].base_url.startswith("https://api.deepseek.com")
    assert config.base_dir == "/srv/models"


def test_an_unknown_vendor_names_the_model_and_the_closest_vendor() -> None:
    data = {"models": [{"name": "ds", "engine": "openai", "vendor": "deepsek"}]}
    with pytest.raises(ConfigError, match=r"test.yaml: model 'ds': unknown vendor 'deepsek'; "
                                          r"did you mean 'deepseek'\?"):
        parse_config(data, "test.yaml")


def test_a_vendor_key_comes_from_its_variable_in_the_resolving_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-from-env")
    data = {"models": [{"name": "ds", "engine": "openai", "vendor": "deepseek"}]}
    assert Config.model_validate(data).models[0].api_key is None
    assert parse_config(data).models[0].api_key == "sk-from-env"
