"""The admin API in-process (with the app's lifespan, so its database is opened), on SQLite
and on a real PostgreSQL: master-key check, key lifecycle, validation, usage summaries."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from modelport.store import UsageRow

MASTER = "mk-test-master-key-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def _config(database_url: str | None, master_key: str | None = MASTER) -> dict:
    # Online models pointed at a closed port: the admin API never calls them.
    server = {"database_url": database_url} if database_url else {}
    if master_key:
        server["master_key"] = master_key
    return {"server": server, "models": [
        {"name": "chat-a", "engine": "openai", "base_url": "http://127.0.0.1:9/v1",
         "aliases": ["a"], "price": {"input": 1.0, "output": 2.0}},
        {"name": "chat-b", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
    ]}


@pytest.fixture
def gateway(database_url):
    state = build_state(parse_config(_config(database_url)))
    with TestClient(build_app(state), raise_server_exceptions=False) as client:
        client.state = state
        yield client


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_admin_routes_need_the_master_key(gateway):
    missing = _error(gateway.get("/admin/keys"), 401)
    assert "master key" in missing["message"]
    wrong = _error(gateway.get("/admin/keys", headers={"Authorization": "Bearer nope"}), 401)
    assert wrong["message"] == "incorrect master key"
    _error(gateway.post("/admin/keys", json={"name": "x"}), 401)
    _error(gateway.get("/admin/usage"), 401)
    assert gateway.get("/admin/keys", headers=AUTH).status_code == 200


def test_admin_api_is_off_without_a_master_key(tmp_path):
    state = build_state(parse_config(_config(f"sqlite:///{tmp_path}/db.sqlite", None)))
    with TestClient(build_app(state)) as client:
        error = _error(client.get("/admin/keys", headers=AUTH), 403)
    assert "no master key is set" in error["message"]
    assert "MODELPORT_MASTER_KEY" in error["message"]


def test_key_lifecycle_create_list_show_patch_revoke(gateway):
    created = gateway.post("/admin/keys", headers=AUTH, json={
        "name": "team-a", "models": ["a", "chat-b", "chat-a"], "rpm": 3, "tpm": 1000,
        "budget_tokens": 50000, "budget_period": "month", "metadata": {"owner": "ana"}})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("sk-mp-") and len(secret) >= 40
    assert body["models"] == ["chat-a", "chat-b"]  # alias resolved, duplicates folded
    assert (body["rpm"], body["tpm"], body["budget_period"]) == (3, 1000, "month")
    assert secret.startswith(body["key_prefix"]) and body["key_prefix"] != secret

    listing = gateway.get("/admin/keys", headers=AUTH)
    assert [k["id"] for k in listing.json()["data"]] == [body["id"]]
    assert secret not in listing.text and "key" not in listing.json()["data"][0]

    state = gateway.state
    assert state.keys.authenticate(secret).rpm == 3
    state.usage.record(UsageRow("chat-a", "/v1/chat/completions", 200, key_id=body["id"],
                                prompt_tokens=10, completion_tokens=5))
    shown = gateway.get(f"/admin/keys/{body['id']}", headers=AUTH).json()
    assert shown["tokens_used"] == 15 and shown["tokens_used_since"].endswith("T00:00:00+00:00")
    assert secret not in str(shown)

    patched = gateway.patch(f"/admin/keys/{body['id']}", headers=AUTH,
                            json={"rpm": None, "tpm": 2000})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["rpm"], patched.json()["tpm"], patched.json()["name"]) == \
        (None, 2000, "team-a")
    assert state.keys.authenticate(secret).rpm is None  # the request path sees it at once

    revoked = gateway.delete(f"/admin/keys/{body['id']}", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert "revoked" in state.keys.authenticate(secret).refusal()


def test_unknown_key_ids_are_404(gateway):
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"rpm": 1}} if method == "PATCH" else {}
        error = _error(gateway.request(method, "/admin/keys/key_nope", headers=AUTH, **kwargs),
                       404)
        assert "key_nope" in error["message"] and error["code"] == "key_not_found"


@pytest.mark.parametrize(("body", "param", "words"), [
    ({}, "name", "Field required"),
    ({"name": ""}, "name", "at least 1 character"),
    ({"name": "x", "rpm": "5"}, "rpm", "valid integer"),
    ({"name": "x", "rpm": 0}, "rpm", "greater than or equal to 1"),
    ({"name": "x", "tpm": 2**40}, "tpm", "less than or equal"),
    ({"name": "x", "models": ["nope"]}, "models", "no model named 'nope'"),
    ({"name": "x", "models": []}, "models", "allows no model"),
    ({"name": "x", "budget_period": "week"}, "budget_period", "'day', 'month' or 'total'"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "in the past"),
    ({"name": "x", "expires_at": "soon"}, "expires_at", "datetime"),
    ({"name": "x", "colour": "red"}, "colour", "unknown field"),
])
def test_bad_create_bodies_are_400_naming_the_field(gateway, body, param, words):
    error = _error(gateway.post("/admin/keys", headers=AUTH, json=body), 400)
    assert error["param"] == param and words in error["message"], error


def test_bad_patch_and_non_json_bodies_are_400(gateway):
    key = gateway.post("/admin/keys", headers=AUTH, json={"name": "k"}).json()
    error = _error(gateway.patch(f"/admin/keys/{key['id']}", headers=AUTH,
                                 json={"name": None}), 400)
    assert error["param"] == "name" and "null" in error["message"]
    error = _error(gateway.post("/admin/keys", headers={**AUTH, "content-type":
                                "application/json"}, content=b"{not json"), 400)
    assert "not valid JSON" in error["message"]
    error = _error(gateway.post("/admin/keys", headers=AUTH, json=["name"]), 400)
    assert "JSON object" in error["message"]


def test_usage_summary_by_key_model_and_day(gateway):
    key = gateway.post("/admin/keys", headers=AUTH, json={"name": "team-b"}).json()
    record = gateway.state.usage.record
    record(UsageRow("chat-a", "/v1/chat/completions", 200, key_id=key["id"],
                    prompt_tokens=1000, completion_tokens=500, at=1764547200.0))  # 2025-12-01
    record(UsageRow("chat-b", "/v1/chat/completions", 429, key_id=key["id"],
                    at=1764633600.0))  # 2025-12-02
    record(UsageRow("chat-b", "/v1/completions", 200, prompt_tokens=7, completion_tokens=3,
                    at=1764633700.0))

    by_key = gateway.get("/admin/usage", headers=AUTH, params={"group_by": "key"}).json()
    rows = {row["key"]: row for row in by_key["data"]}
    assert rows[key["id"]]["name"] == "team-b"
    assert (rows[key["id"]]["requests"], rows[key["id"]]["errors"],
            rows[key["id"]]["total_tokens"]) == (2, 1, 1500)
    assert rows[key["id"]]["cost"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert rows[None]["total_tokens"] == 10 and rows[None]["name"] is None

    by_model = gateway.get("/admin/usage", headers=AUTH, params={"group_by": "model"}).json()
    assert {r["model"]: r["requests"] for r in by_model["data"]} == {"chat-a": 1, "chat-b": 2}
    by_day = gateway.get("/admin/usage", headers=AUTH,
                         params={"group_by": "day", "since": "2025-12-02"}).json()
    assert [(r["day"], r["requests"]) for r in by_day["data"]] == [("2025-12-02", 2)]
    assert by_day["since"] == "2025-12-02T00:00:00+00:00"
    window = gateway.get("/admin/usage", headers=AUTH, params={
        "group_by": "day", "since": "1764547100", "until": "2025-12-02T00:00:00Z"}).json()
    assert [r["day"] for r in window["data"]] == ["2025-12-01"]
    recent = gateway.get("/admin/usage", headers=AUTH, params={"since": "7d"}).json()
    assert recent["data"] == []  # every row above is older than a week


def test_bad_usage_queries_are_400(gateway):
    error = _error(gateway.get("/admin/usage", headers=AUTH, params={"group_by": "user"}), 400)
    assert error["param"] == "group_by" and "key, model, day" in error["message"]
    error = _error(gateway.get("/admin/usage", headers=AUTH, params={"since": "yesterday"}), 400)
    assert error["param"] == "since" and "7d" in error["message"]


def test_secrets_never_appear_in_answers(gateway):
    created = gateway.post("/admin/keys", headers=AUTH, json={"name": "s"}).json()
    answers = [gateway.get("/admin/keys", headers=AUTH).text,
               gateway.get(f"/admin/keys/{created['id']}", headers=AUTH).text,
               gateway.get("/admin/usage", headers=AUTH).text,
               gateway.get("/admin/keys", headers={"Authorization": "Bearer x"}).text]
    from modelport.store.keys import hash_secret

    for text in answers:
        assert MASTER not in text and created["key"] not in text
        assert hash_secret(created["key"]) not in text
