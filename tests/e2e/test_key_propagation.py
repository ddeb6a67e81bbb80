"""Key changes across gateways, end to end: two real gateways sharing one PostgreSQL and
one Redis; a key made or revoked through one is taken or refused by the other within
250 ms of the first one's answer (Redis pub/sub), not at the next database poll."""

from __future__ import annotations

import time

import httpx

from support.fake_upstream import FakeUpstream
from support.server import ModelportServer

MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
WITHIN_S = 0.25


def status_on(gateway: ModelportServer, secret: str) -> int:
    return httpx.get(gateway.base_url + "/models", timeout=5,
                     headers={"Authorization": f"Bearer {secret}"}).status_code


def seconds_until(gateway: ModelportServer, secret: str, status: int) -> float:
    """From now until `gateway` answers the key with `status` (polled back to back)."""
    started = time.monotonic()
    while status_on(gateway, secret) != status:
        assert time.monotonic() - started < 10, f"never {status}"
    return time.monotonic() - started


def test_new_and_revoked_keys_reach_the_other_gateway_within_250_ms(tmp_path, redis_server,
                                                                     postgres):
    upstream = FakeUpstream().start()
    config = {"server": {"master_key": "${E2E_MASTER}", "redis_url": redis_server.url,
                         "database_url": postgres.create_database("key_propagation")},
              "models": [{"name": "echo", "engine": "openai", "base_url": upstream.url("echo")}]}
    first, second = (ModelportServer(config, tmp_path, env={"E2E_MASTER": MASTER})
                     for _ in range(2))
    try:
        first.start(timeout=60)
        second.start(timeout=60)
        time.sleep(1.0)  # both are on the channel
        took = {"new": [], "revoked": []}
        for _ in range(3):
            made = httpx.post(first.url + "/admin/keys", headers=ADMIN, timeout=30,
                              json={"name": "propagation"})
            assert made.status_code == 201
            secret, key_id = made.json()["key"], made.json()["id"]
            took["new"].append(seconds_until(second, secret, 200))
            revoked = httpx.delete(f"{first.url}/admin/keys/{key_id}", headers=ADMIN,
                                   timeout=30)
            assert revoked.status_code == 200
            took["revoked"].append(seconds_until(second, secret, 401))
        assert max(took["new"]) <= WITHIN_S, took
        assert max(took["revoked"]) <= WITHIN_S, took
    finally:
        first.stop()
        second.stop()
        upstream.stop()
