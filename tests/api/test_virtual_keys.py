"""Virtual keys on the request path, in-process with the app's lifespan (so the database is
open) on SQLite and a real PostgreSQL, against a fake vendor: auth, allow-list, limits with
their headers, usage rows with the upstream's real token counts."""

from __future__ import annotations

import time

import orjson
import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from modelport.limits.reservation import reservation
from support.vendor_fakes import Reply, VendorFake, sse

MASTER = "mk-test-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "x",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hi"}}], "usage": USAGE}


@pytest.fixture(scope="module")
def fake():
    upstream = VendorFake().start()
    upstream.default = Reply(json=ANSWER)
    yield upstream
    upstream.stop()


@pytest.fixture
def gateway(database_url, fake):
    config = {"server": {"database_url": database_url, "master_key": MASTER}, "models": [
        {"name": "chat-a", "engine": "openai", "base_url": fake.url + "/v1", "aliases": ["a"],
         "price": {"input": 1.0, "output": 2.0}},
        {"name": "chat-b", "engine": "openai", "base_url": fake.url + "/v1"},
        # Fails over to chat-a when its own upstream fails.
        {"name": "chat-c", "engine": "openai", "base_url": fake.url + "/v1",
         "fallbacks": ["chat-a"], "retries": {"attempts": 1}, "cooldown": {"failures": 1000}},
    ]}
    state = build_state(parse_config(config))
    with TestClient(build_app(state), raise_server_exceptions=False) as client:
        yield client


def new_key(gateway, **fields) -> tuple[str, str]:
    response = gateway.post("/admin/keys", headers=ADMIN, json={"name": "team", **fields})
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["id"]


def chat(gateway, secret, model="a", **fields):
    return gateway.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                        json={"model": model, "messages": [{"role": "user", "content": "Hi"}],
                              **fields})


def usage_by_key(gateway, key_id, timeout=8.0) -> dict:
    """The key's usage summary once its rows are written (they go in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = gateway.get("/admin/usage?group_by=key", headers=ADMIN).json()["data"]
        row = next((r for r in rows if r["key"] == key_id), None)
        if row is not None or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def test_allow_list_rpm_usage_and_revocation(gateway):
    secret, key_id = new_key(gateway, models=["a"], rpm=3)
    refused = chat(gateway, secret, model="chat-b")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"

    answers = [chat(gateway, secret) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    limited = chat(gateway, secret)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rpm_exceeded"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(limited.headers["retry-after"]) >= 1

    row = usage_by_key(gateway, key_id)
    assert row["prompt_tokens"] == 3 * USAGE["prompt_tokens"]
    assert row["completion_tokens"] == 3 * USAGE["completion_tokens"]
    assert gateway.delete(f"/admin/keys/{key_id}", headers=ADMIN).status_code == 200
    revoked = chat(gateway, secret)
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]["message"]


def test_models_list_shows_only_the_allowed_models(gateway):
    secret, _ = new_key(gateway, models=["chat-b"])
    auth = {"Authorization": f"Bearer {secret}"}
    listed = gateway.get("/v1/models", headers=auth).json()["data"]
    assert [m["id"] for m in listed] == ["chat-b"]
    assert gateway.get("/v1/models/chat-a", headers=auth).status_code == 404
    everything = gateway.get("/v1/models", headers=ADMIN).json()["data"]
    assert {m["id"] for m in everything} == {"chat-a", "chat-b", "chat-c"}


def test_a_fallback_outside_the_allow_list_never_answers_for_the_key(gateway, fake):
    failing = Reply(status=500, json={"error": {"message": "boom"}})
    secret, _ = new_key(gateway, models=["chat-c"])
    fake.script(failing)
    refused = chat(gateway, secret, model="chat-c")
    assert refused.status_code == 502  # chat-a, its fallback, is not the key's to use
    open_secret, _ = new_key(gateway, models=["chat-c", "chat-a"])
    fake.script(failing, Reply(json=ANSWER))
    served = chat(gateway, open_secret, model="chat-c")
    assert served.status_code == 200
    assert served.headers["x-modelport-fallback-from"] == "chat-c"


def reserved(max_tokens):
    """What admission reserves for `chat(..., max_tokens=...)` (an online model: no context)."""
    body = {"model": "a", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": max_tokens}
    return reservation(len(orjson.dumps(body)), max_tokens, True, None)


def test_tpm_counts_reservations_then_real_usage(gateway):
    hold = reserved(4)
    used = USAGE["total_tokens"]
    secret, _ = new_key(gateway, tpm=2 * used + hold - 1)
    first = chat(gateway, secret, max_tokens=4)
    # Counted while it ran: what it could have used; then only its real 15 tokens.
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == used + used - 1
    second = chat(gateway, secret, max_tokens=4)
    assert second.status_code == 200
    third = chat(gateway, secret, max_tokens=4)  # 30 used: its reservation no longer fits
    assert third.status_code == 429 and third.json()["error"]["code"] == "tpm_exceeded"


def test_a_reservation_beyond_tpm_is_refused_before_the_upstream(gateway, fake):
    secret, _ = new_key(gateway, tpm=reserved(10))
    before = len(fake.requests)
    refused = chat(gateway, secret, max_tokens=11)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tpm_exceeded"
    assert f"up to {reserved(11)} tokens" in refused.json()["error"]["message"]
    assert "max_tokens" in refused.json()["error"]["message"]
    assert len(fake.requests) == before
    assert chat(gateway, secret, max_tokens=10).status_code == 200


def test_total_budget_that_cannot_hold_a_request_is_a_403(gateway):
    used = USAGE["total_tokens"]
    secret, _ = new_key(gateway, budget_tokens=2 * used + reserved(4) - 1,
                        budget_period="total")
    assert chat(gateway, secret, max_tokens=4).status_code == 200
    assert chat(gateway, secret, max_tokens=4).status_code == 200
    spent = chat(gateway, secret, max_tokens=4)
    assert spent.status_code == 403 and spent.json()["error"]["code"] == "budget_exhausted"


def test_an_unknown_or_expired_virtual_key_is_a_401(gateway):
    assert chat(gateway, "sk-mp-" + "x" * 43).status_code == 401
    secret, key_id = new_key(gateway, expires_at=time.time() + 2)
    assert chat(gateway, secret).status_code == 200
    time.sleep(2.2)
    expired = chat(gateway, secret)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_streams_and_the_anthropic_route_count_for_the_key(gateway, fake):
    secret, key_id = new_key(gateway, rpm=2)
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "x",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    fake.script(Reply(events=sse(chunk, {**chunk, "choices": [], "usage": USAGE})))
    streamed = chat(gateway, secret, stream=True)
    assert streamed.status_code == 200
    assert streamed.headers["x-ratelimit-remaining-requests"] == "1"
    message = gateway.post("/v1/messages", headers={"x-api-key": secret}, json={
        "model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    assert message.status_code == 200, message.text
    refused = gateway.post("/v1/messages", headers={"x-api-key": secret}, json={
        "model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status_code == 429
    assert refused.json()["type"] == "error"  # Anthropic's envelope on its own route
    row = usage_by_key(gateway, key_id)
    assert row["prompt_tokens"] == 2 * USAGE["prompt_tokens"]


def test_static_and_master_keys_have_no_limits_and_no_headers(gateway):
    answer = chat(gateway, MASTER)
    assert answer.status_code == 200
    assert "x-ratelimit-limit-requests" not in answer.headers


@pytest.mark.parametrize("max_tokens", [2**64 - 1, 10**12, 2**31])
def test_a_max_tokens_no_engine_can_hold_is_a_clear_400(gateway, fake, max_tokens):
    secret, _ = new_key(gateway, tpm=1000)
    before = len(fake.requests)
    for field in ("max_tokens", "max_completion_tokens"):
        refused = chat(gateway, secret, **{field: max_tokens})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == field and "2147483647" in error["message"]
        assert "-" not in error["message"].split("2147483647")[0][-30:]  # no wrapped number
    assert len(fake.requests) == before


def test_key_metadata_has_a_size_limit(gateway):
    big = {"notes": "x" * 5000}
    refused = gateway.post("/admin/keys", headers=ADMIN, json={"name": "big", "metadata": big})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "metadata"
    assert "at most 4096" in refused.json()["error"]["message"]
    _, key_id = new_key(gateway, metadata={"team": "search"})
    patched = gateway.patch(f"/admin/keys/{key_id}", headers=ADMIN, json={"metadata": big})
    assert patched.status_code == 400
