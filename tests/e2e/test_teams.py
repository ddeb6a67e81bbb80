"""Teams, end to end with real processes: a virtual key against the real default models,
and two gateways sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from support.fake_upstream import FakeUpstream
from support.models import CHAT, EMBED, default_models
from support.server import ModelportServer, wait_inside_a_minute

MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def create_key(server: ModelportServer, **fields) -> dict:
    response = httpx.post(server.url + "/admin/keys", headers=ADMIN, timeout=30,
                          json={"name": "e2e", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def usage_row(server: ModelportServer, key_id: str, requests: int, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rows = httpx.get(server.url + "/admin/usage?group_by=key", headers=ADMIN).json()["data"]
        row = next((r for r in rows if r["key"] == key_id), None)
        if row is not None and row["requests"] >= requests or time.monotonic() > deadline:
            return row
        time.sleep(0.25)


def test_a_limited_key_on_the_default_models(tmp_path):
    server = ModelportServer({"server": {"master_key": "${E2E_MASTER}"},
                              "models": default_models()}, tmp_path,
                             env={"E2E_MASTER": MASTER, "MODELPORT_DATA_DIR": str(tmp_path)})
    server.start()
    try:
        key = create_key(server, models=["smollm2"], rpm=3)
        client = openai.OpenAI(base_url=server.base_url, api_key=key["key"], max_retries=0,
                               timeout=120)
        with pytest.raises(openai.PermissionDeniedError):
            client.embeddings.create(model=EMBED, input="hi")
        used = {"prompt": 0, "completion": 0}
        wait_inside_a_minute()
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(
                model="smollm2", max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            answer = raw.parse()
            used["prompt"] += answer.usage.prompt_tokens
            used["completion"] += answer.usage.completion_tokens
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="smollm2", max_tokens=5,
                                           messages=[{"role": "user", "content": "Hi"}])
        headers = limited.value.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"].endswith("s") and headers["retry-after"]

        row = usage_row(server, key["id"], requests=5)
        assert row["prompt_tokens"] == used["prompt"] > 0
        assert row["completion_tokens"] == used["completion"] > 0
        models = httpx.get(server.base_url + "/models",
                           headers={"Authorization": f"Bearer {key['key']}"}).json()["data"]
        assert [m["id"] for m in models] == [CHAT]

        revoked = httpx.delete(f"{server.url}/admin/keys/{key['id']}", headers=ADMIN)
        assert revoked.status_code == 200
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    finally:
        server.stop()


def test_two_gateways_on_one_redis_share_a_key_rpm(tmp_path, redis_server, postgres):
    upstream = FakeUpstream().start()
    database = postgres.create_database("teams_two_gateways")
    config = {"server": {"master_key": "${E2E_MASTER}", "database_url": database,
                         "redis_url": redis_server.url},
              "models": [{"name": "echo", "engine": "openai", "base_url": upstream.url("echo")}]}
    gateways = [ModelportServer(config, tmp_path, env={"E2E_MASTER": MASTER}) for _ in range(2)]
    try:
        for gateway in gateways:
            gateway.start(timeout=60)
        key = create_key(gateways[0], rpm=4)
        auth = {"Authorization": f"Bearer {key['key']}"}
        # The second gateway learns of the key from the shared database within seconds.
        deadline = time.monotonic() + 15
        while httpx.get(gateways[1].base_url + "/models", headers=auth).status_code == 401:
            assert time.monotonic() < deadline, "the second gateway never saw the new key"
            time.sleep(0.25)

        def ask(gateway):
            return httpx.post(gateway.base_url + "/chat/completions", headers=auth, timeout=30,
                              json={"model": "echo",
                                    "messages": [{"role": "user", "content": "Hi"}]})

        wait_inside_a_minute()
        statuses = [ask(gateways[i % 2]).status_code for i in range(4)]
        assert statuses == [200, 200, 200, 200]
        refused = [ask(gateway) for gateway in gateways]
        assert [r.status_code for r in refused] == [429, 429]
        assert all(r.json()["error"]["code"] == "rpm_exceeded" for r in refused)
    finally:
        for gateway in gateways:
            gateway.stop()
        upstream.stop()
