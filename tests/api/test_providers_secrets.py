"""Upstream keys never leave the gateway: not in answers, errors, logs or `modelport check`;
plus the other ways a key and a request travel (query-string key, HTTP proxy)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import yaml

from support.server import free_port
from support.vendor_fakes import InProcessGateway, Reply

ENV_KEY = "sk-from-env-0123456789abcdef"
CONFIG_KEY = "sk-in-config-0123456789abcdef"
QUERY_KEY = "query-key-0123456789abcdef"


def config(fake_url):
    return {
        "vendors": {"querykey": {"base_url": fake_url + "/q/v1", "auth": "query",
                                 "auth_name": "key", "key_env": "MP_TEST_QUERY_KEY"}},
        "models": [
            {"name": "ds", "engine": "openai", "vendor": "deepseek", "base_url": fake_url,
             "retries": {"attempts": 1}},
            {"name": "plain", "engine": "openai", "base_url": fake_url + "/v1",
             "api_key": CONFIG_KEY, "retries": {"attempts": 1}},
            {"name": "q", "engine": "openai", "vendor": "querykey", "retries": {"attempts": 1}},
            {"name": "q-dead", "engine": "openai", "vendor": "querykey",
             "base_url": f"http://127.0.0.1:{free_port()}/v1", "retries": {"attempts": 1}},
        ],
    }


@pytest.fixture(scope="module")
def gateway(fake):
    os.environ["DEEPSEEK_API_KEY"] = ENV_KEY
    os.environ["MP_TEST_QUERY_KEY"] = QUERY_KEY
    try:
        gw = InProcessGateway(config(fake.url))
    finally:
        del os.environ["DEEPSEEK_API_KEY"], os.environ["MP_TEST_QUERY_KEY"]
    yield gw
    gw.close()


def gateway_logs(caplog):
    """What the gateway logged (the fake vendor's own access log shows what it received)."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith("aiohttp.access"))


def assert_no_key(text):
    for key in (ENV_KEY, CONFIG_KEY, QUERY_KEY):
        assert key not in text


def test_keys_are_sent_but_never_shown(fake, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    fake.script(Reply(json={"choices": []}))
    assert gateway.chat("ds").status_code == 200
    assert fake.last().headers["authorization"] == f"Bearer {ENV_KEY}"  # read from key_env
    # Upstreams echo a rejected key back in their error message; it is masked.
    for model, key in (("ds", ENV_KEY), ("plain", CONFIG_KEY)):
        fake.script(Reply(status=401, json={"error": {
            "message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
            "code": "invalid_api_key"}}))
        response = gateway.chat(model)
        # The upstream refusing the configured key is not the client's key being wrong.
        assert response.status_code == 502 and "Incorrect API key provided: ***" in response.text
        assert response.json()["error"]["code"] == "upstream_auth_failed"
        assert_no_key(response.text)
    for path in ("/v1/models", "/v1/models/ds", "/health", "/health/ready"):
        assert_no_key(gateway.call("GET", path).text)
    assert_no_key(repr(gateway.state.config) + str(gateway.state.config))
    assert_no_key(gateway_logs(caplog))


def test_a_key_sent_in_the_query_string_stays_out_of_errors(fake, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    fake.script(Reply(json={"choices": []}))
    assert gateway.chat("q").status_code == 200
    assert fake.last().query == {"key": QUERY_KEY} and "authorization" not in fake.last().headers
    response = gateway.chat("q-dead")  # the URL with the key in it cannot be reached
    assert response.status_code == 502
    assert_no_key(response.text + gateway_logs(caplog))


def test_requests_go_through_the_configured_http_proxy(fake):
    gateway = InProcessGateway({"models": [{
        "name": "proxied", "engine": "openai", "base_url": "http://vendor.invalid/v1",
        "proxy": fake.url, "retries": {"attempts": 1}}]})
    try:
        fake.script(Reply(json={"choices": []}))
        assert gateway.chat("proxied").status_code == 200
        assert fake.last().headers["host"] == "vendor.invalid"
        assert fake.last().path == "/v1/chat/completions"
    finally:
        gateway.close()


def test_modelport_check_never_prints_keys(tmp_path, fake):
    path = tmp_path / "modelport.yaml"
    data = config(fake.url)
    data["models"].append({"name": "claude", "engine": "openai", "vendor": "anthropic",
                           "api_key": "${MP_TEST_CONFIG_KEY}"})
    data["models"].append({"name": "plug", "engine": "plugin", "api_key": CONFIG_KEY,
                           "provider": "modelport_example_plugin.echo:EchoProvider"})
    path.write_text(yaml.safe_dump(data))
    # check starts the plugin as serve would, so the example package must be importable
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                           "modelport-example-plugin")
    env = {**os.environ, "DEEPSEEK_API_KEY": ENV_KEY, "MP_TEST_QUERY_KEY": QUERY_KEY,
           "MP_TEST_CONFIG_KEY": CONFIG_KEY, "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), example]))}
    result = subprocess.run([sys.executable, "-m", "modelport", "check", "--config", str(path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "api.anthropic.com" in result.stdout and "config OK" in result.stdout
    assert_no_key(result.stdout + result.stderr)
