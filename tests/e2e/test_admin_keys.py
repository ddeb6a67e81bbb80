"""Keys and usage through a real `modelport serve` and the real `modelport` CLI, on the
default SQLite file and on a real PostgreSQL: create a key, list it, show it, revoke it,
read usage, and find it all again after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from support.server import ModelportServer, free_port

pytestmark = pytest.mark.e2e
MASTER = "mk-e2e-master-0123456789abcdef"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def _server(tmp_path, database_url: str | None, port: int | None = None) -> ModelportServer:
    server = {"master_key": "${E2E_MASTER_KEY}"}
    if database_url:
        server["database_url"] = database_url
    # An online model (nothing to load, so the server starts in seconds); the admin API
    # never calls it.
    config = {"server": server, "models": [
        {"name": "team-chat", "engine": "openai", "aliases": ["tc"],
         "base_url": f"http://127.0.0.1:{free_port()}/v1"}]}
    return ModelportServer(config, tmp_path, port=port,
                           env={"E2E_MASTER_KEY": MASTER,
                                "MODELPORT_DATA_DIR": str(tmp_path / "data")})


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_keys_through_the_cli_survive_a_restart(tmp_path, request, kind):
    url = None if kind == "sqlite" else request.getfixturevalue("postgres").create_database(
        "e2e_keys")
    server = _server(tmp_path, url).start(timeout=120)
    admin = {"MODELPORT_MASTER_KEY": MASTER, "MODELPORT_URL": server.url}
    try:
        created = run_cli("keys", "create", "analytics", "--model", "tc", "--rpm", "3",
                          "--budget-tokens", "5000", "--budget-period", "day",
                          "--meta", "owner=ana", "--expires", "30d", env=admin)
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip().splitlines()[-1]
        assert secret.startswith("sk-mp-")

        listed = run_cli("keys", "list", "--json", env=admin)
        assert listed.returncode == 0, listed.stderr
        keys = json.loads(listed.stdout)
        assert [(k["name"], k["models"], k["rpm"]) for k in keys] == \
            [("analytics", ["team-chat"], 3)]
        key_id = keys[0]["id"]
        expires_in = datetime.fromisoformat(keys[0]["expires_at"]) - datetime.now(UTC)
        assert timedelta(days=29) < expires_in <= timedelta(days=30)
        assert secret not in listed.stdout

        table = run_cli("keys", "list", env=admin)
        assert table.returncode == 0 and "analytics" in table.stdout and "active" in table.stdout
        shown = run_cli("keys", "show", key_id, env=admin)
        assert shown.returncode == 0 and "5,000 tokens/day" in shown.stdout
        assert "owner=ana" in shown.stdout

        revoked = run_cli("keys", "revoke", key_id, env=admin)
        assert revoked.returncode == 0, revoked.stderr
        assert f"revoked analytics ({key_id})" in revoked.stdout

        usage = run_cli("usage", "--group-by", "model", "--json", env=admin)
        assert usage.returncode == 0, usage.stderr
        assert json.loads(usage.stdout)["group_by"] == "model"

        wrong = run_cli("keys", "list", env={**admin, "MODELPORT_MASTER_KEY": "wrong"})
        assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
        assert MASTER not in server.log()
    finally:
        server.stop()

    restarted = _server(tmp_path, url, port=server.port).start(timeout=120)
    try:
        after = httpx.get(f"{restarted.url}/admin/keys",
                          headers={"Authorization": f"Bearer {MASTER}"}, timeout=10).json()
        assert [(k["id"], k["revoked"]) for k in after["data"]] == [(key_id, True)]
    finally:
        restarted.stop()
    if kind == "sqlite":  # the config file's own database (<config name>-<hash>.db)
        databases = [p.name for p in (tmp_path / "data").glob("*.db")]
        assert len(databases) == 1
        assert databases[0].startswith(server.config_path.stem + "-")


def test_keys_commands_explain_a_missing_master_key():
    result = run_cli("keys", "list", "--url", "http://127.0.0.1:9",
                     env={"MODELPORT_MASTER_KEY": ""})
    assert result.returncode == 2
    assert "--master-key" in result.stderr and "MODELPORT_MASTER_KEY" in result.stderr


def test_check_shows_where_keys_live_without_the_password(tmp_path):
    config = tmp_path / "modelport.yaml"
    config.write_text(
        "server:\n  database_url: postgresql://mp:hunter2-secret@db.internal:5432/mp\n"
        "models:\n  - {name: m, engine: openai, base_url: 'http://127.0.0.1:9/v1'}\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "keys and usage: postgresql+asyncpg://mp:***@db.internal:5432/mp" in result.stdout
    assert "admin API: off" in result.stdout and "hunter2" not in result.stdout + result.stderr
