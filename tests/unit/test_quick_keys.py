"""Keys from `serve --api-key` / MODELPORT_API_KEY join the config's keys before start-up
checks, so they also satisfy the rule that a public address needs keys."""

from __future__ import annotations

import pytest

from modelport.cli.main import _add_quick_keys
from modelport.config import parse_config
from modelport.errors import ConfigError
from modelport.gateway.build import _bind_problem

CONFIG = {"server": {"host": "0.0.0.0", "api_keys": ["sk-file"]},
          "models": [{"name": "remote", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}


def test_flags_and_environment_add_keys_once_each(monkeypatch):
    monkeypatch.setenv("MODELPORT_API_KEY", "sk-env")
    cfg = parse_config(CONFIG)
    _add_quick_keys(cfg, ["sk-a", "sk-a", "sk-file"])
    assert cfg.server.api_keys == ["sk-file", "sk-a", "sk-env"]


def test_a_public_address_with_only_a_command_line_key_is_allowed(monkeypatch):
    monkeypatch.delenv("MODELPORT_API_KEY", raising=False)
    cfg = parse_config({**CONFIG, "server": {"host": "0.0.0.0"}})
    assert _bind_problem(cfg, allow_public=False) is not None
    _add_quick_keys(cfg, ["sk-a"])
    assert _bind_problem(cfg, allow_public=False) is None


def test_an_empty_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("MODELPORT_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="--api-key is empty"):
        _add_quick_keys(parse_config(CONFIG), ["  "])
