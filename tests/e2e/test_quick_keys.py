"""`serve --api-key` and MODELPORT_API_KEY protect a server without a config file change."""

from __future__ import annotations

import httpx
import pytest

from support.server import ModelportServer, free_port

CONFIG = {"models": [{"name": "remote", "engine": "openai",
                      "base_url": f"http://127.0.0.1:{free_port()}/v1"}]}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    server = ModelportServer(CONFIG, tmp_path_factory.mktemp("quick-keys"),
                             args=["--api-key", "sk-flag-one", "--api-key", "sk-flag-two"],
                             env={"MODELPORT_API_KEY": "sk-from-env"})
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.mark.parametrize("key", ["sk-flag-one", "sk-flag-two", "sk-from-env"])
def test_each_key_given_on_the_command_line_or_environment_is_accepted(keyed, key):
    response = httpx.get(keyed.base_url + "/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()["data"]] == ["remote"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-flag-three"}])
def test_requests_without_one_of_those_keys_are_refused(keyed, headers):
    response = httpx.get(keyed.base_url + "/models", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_no_key_is_logged(keyed):
    assert "sk-flag-one" not in keyed.log() and "sk-from-env" not in keyed.log()
