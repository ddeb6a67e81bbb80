"""Vendor quirks from the vendors file, applied to request bodies and answers."""

from __future__ import annotations

import pytest

from modelport.config import VendorSpec, parse_config
from modelport.errors import ConfigError
from modelport.config.vendors import builtin_vendors
from modelport.providers.quirks import apply_quirks, body_error

REQUIRED_VENDORS = {"openai", "azure", "deepseek", "moonshot", "zhipu", "qwen", "qianfan",
                    "minimax", "baichuan", "ark", "spark", "siliconflow", "anthropic"}


def spec(**fields):
    return VendorSpec(base_url="https://x/v1", **fields)


def test_the_vendors_file_lists_every_required_vendor_with_a_key_variable():
    vendors = builtin_vendors()
    assert REQUIRED_VENDORS <= set(vendors)
    assert all(v.key_env and v.docs for v in vendors.values())


def test_renamed_dropped_clamped_and_capped_fields():
    body = {"model": "m", "max_completion_tokens": 99999, "temperature": 0.0, "top_p": 1.0,
            "stream_options": {"include_usage": True}, "messages": []}
    out = apply_quirks(spec(rename={"max_completion_tokens": "max_tokens"}, drop=["stream_options"],
                            ranges={"temperature": (0.01, 1.0), "top_p": (0.01, 0.99)},
                            max_tokens_limit=8192), body)
    assert out == {"model": "m", "max_tokens": 8192, "temperature": 0.01, "top_p": 0.99,
                   "messages": []}
    assert "max_completion_tokens" in body  # the caller's body is left alone


def test_default_max_tokens_only_when_the_client_gave_none():
    quirks = spec(default_max_tokens=4096)
    assert apply_quirks(quirks, {})["max_tokens"] == 4096
    assert apply_quirks(quirks, {"max_tokens": 5})["max_tokens"] == 5


def test_errors_reported_inside_a_200_body():
    minimax = builtin_vendors()["minimax"]
    failed = {"base_resp": {"status_code": 1004, "status_msg": "login fail"}}
    error = body_error(minimax, failed, "m")
    assert error is not None and error.code == "1004" and "login fail" in error.message
    assert body_error(minimax, {"base_resp": {"status_code": 0}}, "m") is None
    spark = builtin_vendors()["spark"]
    assert body_error(spark, {"code": 10013, "message": "input flagged"}, "m").code == "10013"
    assert body_error(spark, {"code": 0, "message": "Success"}, "m") is None


def test_user_vendors_are_added_without_code_and_can_override_builtins(monkeypatch):
    monkeypatch.setenv("ACME_KEY", "acme-secret")
    config = parse_config({
        "vendors": {"acme": {"base_url": "https://llm.acme.test/v1", "key_env": "ACME_KEY"},
                    "deepseek": {"base_url": "https://proxy.internal/deepseek"}},
        "models": [{"name": "a", "engine": "openai", "vendor": "acme"},
                   {"name": "d", "engine": "openai", "vendor": "deepseek"}]})
    acme, deepseek = config.models
    assert acme.base_url == "https://llm.acme.test/v1" and acme.api_key == "acme-secret"
    assert deepseek.base_url == "https://proxy.internal/deepseek"


def test_vendor_mistakes_are_config_errors_naming_the_fix():
    with pytest.raises(ConfigError, match="did you mean 'deepseek'"):
        parse_config({"models": [{"name": "a", "engine": "openai", "vendor": "deepsek"}]})
    with pytest.raises(ConfigError, match="url_params.resource"):
        parse_config({"models": [{"name": "a", "engine": "openai", "vendor": "azure"}]})
    with pytest.raises(ConfigError, match="auth_name"):
        parse_config({"vendors": {"v": {"base_url": "https://v/v1", "auth": "header"}}})
    with pytest.raises(ConfigError, match="falls back to 'nope'"):
        parse_config({"models": [{"name": "a", "engine": "openai", "base_url": "http://a/v1",
                                  "fallbacks": ["nope"]}]})


def test_old_style_openai_entries_still_need_only_base_url_and_key():
    model = parse_config({"models": [{"name": "a", "engine": "openai", "base_url": "http://a/v1/",
                                      "api_key": "k"}]}).models[0]
    assert (model.base_url, model.api_key, model.vendor) == ("http://a/v1", "k", None)
