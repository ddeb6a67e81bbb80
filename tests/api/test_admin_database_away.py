"""The admin API while its PostgreSQL is away (stopped after the gateway started, and
SIGSTOPped): every route that writes keys or reads usage answers 503 in the OpenAI envelope, within
seconds; requests of existing keys are still served from memory."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from starlette.testclient import TestClient

from modelport.api import admin
from modelport.api.app import build_app
from modelport.config import parse_config
from modelport.gateway.build import build_state
from support.postgres import PostgresServer
from support.vendor_fakes import Reply, VendorFake

MASTER = "mk-test-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "x",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "Hi"}}],
          "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}}
# Routes that write keys or read usage (a key list may be answered from memory).
ROUTES = [("POST", "/admin/keys", {"name": "new"}), ("PATCH", "/admin/keys/{id}", {"rpm": 5}),
          ("GET", "/admin/usage?group_by=key", None), ("DELETE", "/admin/keys/{id}", None)]


@pytest.fixture
def fake():
    upstream = VendorFake().start()
    upstream.default = Reply(json=ANSWER)
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("away", ["stopped", "sigstopped"])
def test_admin_routes_answer_503_while_postgres_is_away(fake, away, monkeypatch):
    monkeypatch.setattr(admin, "DATABASE_WAIT_S", 1.0)
    postgres = PostgresServer().start()
    try:
        config = {"server": {"database_url": postgres.create_database("away"),
                             "master_key": MASTER},
                  "models": [{"name": "chat", "engine": "openai", "base_url": fake.url + "/v1"}]}
        with TestClient(build_app(build_state(parse_config(config))),
                        raise_server_exceptions=False) as client:
            made = client.post("/admin/keys", headers=ADMIN, json={"name": "k", "rpm": 100})
            auth = {"Authorization": f"Bearer {made.json()['key']}"}
            # The server and every backend, the pooled connections' own included.
            processes = [postgres.pid] + [child.pid for child in
                                          psutil.Process(postgres.pid).children(recursive=True)]
            if away == "stopped":
                postgres.stop()
            else:
                for pid in processes:
                    os.kill(pid, signal.SIGSTOP)
            try:
                for method, path, body in ROUTES:
                    started = time.monotonic()
                    answer = client.request(method, path.format(id=made.json()["id"]),
                                            headers=ADMIN, json=body)
                    assert time.monotonic() - started < 5
                    assert answer.status_code == 503, answer.text
                    error = answer.json()["error"]
                    assert error["code"] == "database_unavailable"
                    assert error["type"] == "service_unavailable"
                served = client.post("/v1/chat/completions", headers=auth, json={
                    "model": "chat", "messages": [{"role": "user", "content": "Hi"}]})
                assert served.status_code == 200
            finally:
                if away == "sigstopped":
                    for pid in processes:
                        os.kill(pid, signal.SIGCONT)
    finally:
        postgres.stop()
