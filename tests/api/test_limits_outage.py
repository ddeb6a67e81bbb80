"""A gateway whose Redis is away from the start, in-process: key limits count in the
process (`limits_on_outage: local`, the default) or are refused with an enveloped 503 and
Retry-After (`deny`); /health says `redis: degraded`; nothing is a 500."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from support.server import free_port
from support.vendor_fakes import Reply, VendorFake

MASTER = "mk-test-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "x",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hi"}}],
          "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}}


@pytest.fixture(scope="module")
def fake():
    upstream = VendorFake().start()
    upstream.default = Reply(json=ANSWER)
    yield upstream
    upstream.stop()


def gateway(tmp_path, fake, on_outage: str) -> TestClient:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = {"server": {"database_url": f"sqlite:///{tmp_path / 'keys.db'}",
                         "master_key": MASTER, "redis_url": dead_redis,
                         "limits_on_outage": on_outage},
              "models": [{"name": "chat", "engine": "openai", "base_url": fake.url + "/v1"}]}
    return TestClient(build_app(build_state(parse_config(config))),
                      raise_server_exceptions=False)


def new_key(client: TestClient, **limits) -> dict:
    response = client.post("/admin/keys", headers=ADMIN, json={"name": "k", **limits})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


def chat(client: TestClient, auth: dict):
    return client.post("/v1/chat/completions", headers=auth, json={
        "model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})


def test_limits_count_in_the_process_while_redis_is_away(tmp_path, fake, caplog):
    with gateway(tmp_path, fake, "local") as client:
        assert client.get("/health").json()["redis"] == "degraded"
        auth = new_key(client, rpm=2, tpm=100_000)
        answers = [chat(client, auth) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"]["code"] == "rpm_exceeded"
    said = [r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(said) == 1 and "count in this process" in said[0]


def test_deny_refuses_limited_keys_with_a_503_while_redis_is_away(tmp_path, fake):
    with gateway(tmp_path, fake, "deny") as client:
        refused = chat(client, new_key(client, rpm=100))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "limits_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert chat(client, new_key(client)).status_code == 200  # a key without limits
