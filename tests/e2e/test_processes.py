"""`server.processes: 2`: two gateway processes on one port in front of one real
llama.cpp worker. Fresh connections are spread over both; the follower answers chats
through the primary's worker, follows its restart after a kill -9, loads an on-demand
model through the primary; SIGTERM stops every process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import psutil
import pytest
import yaml

from support.fake_upstream import FakeUpstream
from support.metrics import parse_samples, value
from support.models import SMOLLM2
from support.server import (
    ModelportServer,
    free_port,
    pid_alive,
    wait_for,
    wait_inside_a_minute,
)

MODEL = "smollm2"
LAZY = "smollm2-lazy"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
ACCESS = re.compile(r"\[(\d+)\] modelport\.access: (\S+) (\S+) ")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = ModelportServer({
        "server": {"processes": 2, "health_check_interval_s": 0.5},
        "models": [
            {"name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
             "parallel": 2, "threads": 1},
            {"name": LAZY, "engine": "llamacpp", "path": SMOLLM2, "context_length": 512,
             "parallel": 1, "threads": 1, "load": "on_demand"},
        ],
    }, tmp_path_factory.mktemp("processes"))
    instance.start()
    try:
        wait_for(lambda: follower_pid(instance), 60, "the follower process serving")
        yield instance
    finally:
        instance.stop()


def answered_by(server: ModelportServer, path: str) -> int | None:
    """The pid of the gateway process whose access log line names `path`."""
    for pid, _, logged in ACCESS.findall(server.log_path.read_text(errors="replace")):
        if logged == path:
            return int(pid)
    return None


def follower_pid(server: ModelportServer) -> int | None:
    text = server.log_path.read_text(errors="replace")
    found = re.findall(r"gateway process 1 started \(pid (\d+)\)", text)
    if not found or f"[{found[-1]}] modelport: serving" not in text:
        return None
    return int(found[-1])


@contextlib.contextmanager
def connection_to(server: ModelportServer, pid: int) -> Iterator[httpx.Client]:
    """A kept-alive connection that the kernel gave to gateway process `pid`."""
    for _ in range(60):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            probe = f"/v1/models/probe-{uuid.uuid4().hex}"
            client.get(probe)  # 404 (or 401 on a keyed server): logged either way
            if wait_for(lambda: answered_by(server, probe), 5, "the probe logged") == pid:
                yield client
                return
    raise AssertionError(f"no connection landed on process {pid} in 60 tries")


def test_fresh_connections_are_answered_by_both_processes(server):
    paths = [f"/v1/models/spread-{uuid.uuid4().hex}" for _ in range(24)]
    for path in paths:
        with httpx.Client(base_url=server.url, timeout=10) as fresh:
            assert fresh.get(path).status_code == 404
    time.sleep(0.3)  # the last lines reach the log
    pids = {answered_by(server, path) for path in paths}
    assert pids == {server.process.pid, follower_pid(server)}


def test_follower_answers_a_chat_through_the_primarys_worker(server):
    with connection_to(server, follower_pid(server)) as client:
        reply = client.post("/v1/chat/completions", json={"model": MODEL, **CHAT})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]
        worker = client.get("/health").json()["models"][MODEL]["replicas"][0]
    primary_view = server.health()["models"][MODEL]["replicas"][0]
    assert worker["pid"] == primary_view["pid"] and worker["url"] == primary_view["url"]


def test_follower_routes_to_the_restarted_worker(server):
    follower = follower_pid(server)
    with connection_to(server, follower) as client:
        before = client.get("/health").json()["models"][MODEL]["replicas"][0]
        os.kill(before["pid"], signal.SIGKILL)

        def restarted() -> dict | None:
            replica = client.get("/health").json()["models"][MODEL]["replicas"][0]
            return replica if replica["state"] == "ready" and replica["pid"] != before["pid"] \
                else None

        after = wait_for(restarted, 60, "the follower seeing the restarted worker")
        assert after["restarts"] == before["restarts"] + 1
        reply = client.post("/v1/chat/completions", json={"model": MODEL, **CHAT})
        assert reply.status_code == 200, reply.text
    assert answered_by(server, "/v1/chat/completions") is not None


def test_follower_loads_an_on_demand_model_through_the_primary(server):
    assert server.health()["models"][LAZY]["status"] == "unloaded"
    with connection_to(server, follower_pid(server)) as client:
        reply = client.post("/v1/chat/completions", json={"model": LAZY, **CHAT})
        assert reply.status_code == 200, reply.text
    lazy = server.health()["models"][LAZY]
    assert lazy["status"] == "ready" and pid_alive(lazy["worker"]["pid"])
    assert re.search(rf"\[{server.process.pid}\] modelport.loader: model '{LAZY}': loading",
                     server.log_path.read_text())


def chats_counted(client: httpx.Client) -> float:
    """The answered chats of MODEL that /metrics shows, asked over `client`'s connection."""
    reply = client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return value(parse_samples(reply.text), "modelport_requests_total", model=MODEL,
                 endpoint="/v1/chat/completions", status="200")


def test_every_process_answers_metrics_with_the_servers_totals(server):
    first = follower_pid(server)
    with connection_to(server, first) as on_follower, \
            connection_to(server, server.process.pid) as on_primary:
        before = chats_counted(on_follower)
        wait_for(lambda: chats_counted(on_primary) == before, 5, "both processes agreeing")
        for client in (on_follower, on_follower, on_primary):
            assert client.post("/v1/chat/completions",
                               json={"model": MODEL, **CHAT}).status_code == 200
        # The follower sends its own counts with the question; the primary's are live.
        assert chats_counted(on_follower) == before + 3
        # The primary has the follower's as of its last sync (a quarter of a second).
        wait_for(lambda: chats_counted(on_primary) == before + 3, 5,
                 "the primary counting the follower's chats")

    # A follower that dies leaves its counts in the totals: no counter goes back.
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (lambda pid: pid if pid not in (None, first) else None)(
        follower_pid(server)), 60, "the follower restarted")
    with connection_to(server, second) as on_follower:
        assert chats_counted(on_follower) == before + 3
    with httpx.Client(base_url=server.url, timeout=30) as fresh:
        assert chats_counted(fresh) == before + 3


def followers_started(server: ModelportServer) -> list[int]:
    text = server.log_path.read_text(errors="replace")
    return [int(pid) for pid in re.findall(r"gateway process 1 started \(pid (\d+)\)", text)]


def test_followers_run_the_config_the_primary_runs_until_it_reloads(server):
    config = yaml.safe_load(server.config_path.read_text())
    config["models"][0]["aliases"] = ["edited-alias"]
    server.config_path.write_text(yaml.safe_dump(config))  # edited, not reloaded yet
    first = follower_pid(server)
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (lambda pid: pid if pid not in (None, first) else None)(
        follower_pid(server)), 60, "the follower restarted")
    assert f"gateway process 1 (pid {first}) exited with code -9" in server.log()
    with connection_to(server, second) as client:  # the primary's config, not the file's
        assert client.get("/v1/models/edited-alias").status_code == 404

    started_before = len(followers_started(server))
    server.process.send_signal(signal.SIGHUP)
    third = wait_for(lambda: (lambda pids: pids[-1] if len(pids) > started_before and
                              follower_pid(server) == pids[-1] else None)(
        followers_started(server)), 60, "a new follower after the reload")
    wait_for(lambda: not pid_alive(second), 30, "the old follower gone")
    with connection_to(server, third) as client:
        assert client.get("/v1/models/edited-alias").status_code == 200
    assert httpx.get(server.base_url + "/models/edited-alias").status_code == 200


def test_sigterm_stops_every_process(server):
    health = server.health()["models"]
    pids = [server.process.pid, follower_pid(server),
            *(r["pid"] for m in health.values() for r in m["replicas"] if r["pid"])]
    assert all(pid_alive(pid) for pid in pids)
    assert server.stop() == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 10, "every process gone")


def test_ready_only_once_every_process_listens(tmp_path):
    # Connections opened right after "ready" would otherwise all go to the primary and,
    # kept alive, stay there.
    instance = ModelportServer({"server": {"processes": 3}, "models": [
        {"name": "remote", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"}]}, tmp_path)
    instance.start(60)
    try:
        assert instance.process is not None
        primary = psutil.Process(instance.process.pid)
        gateways = [primary, *(child for child in primary.children() if "serve" in child.cmdline())]
        listening = [p.pid for p in gateways if any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == instance.port
            for c in p.net_connections(kind="tcp"))]
        assert len(gateways) == 3 and len(listening) == 3, (gateways, listening)
    finally:
        instance.stop()


def test_check_shows_the_processes_and_refuses_virtual_keys_without_redis(tmp_path):
    def check(server: dict) -> subprocess.CompletedProcess:
        path = tmp_path / "modelport.yaml"
        path.write_text(yaml.safe_dump({"server": {"port": free_port(), **server}, "models": [
            {"name": MODEL, "engine": "llamacpp", "path": SMOLLM2}]}))
        return subprocess.run([sys.executable, "-m", "modelport", "check", "--config",
                               str(path)], capture_output=True, text=True, timeout=60)

    fine = check({"processes": 3})
    assert fine.returncode == 0 and "gateway processes: 3" in fine.stdout, fine.stderr
    refused = check({"processes": 2, "master_key": "sk-master-123"})
    assert refused.returncode == 2
    assert "server.processes is 2" in refused.stderr and "server.redis_url" in refused.stderr


MASTER = "mk-e2e-master-key-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def test_keys_and_limits_hold_across_the_processes(tmp_path, redis_server):
    upstream = FakeUpstream().start()
    server = ModelportServer({
        "server": {"processes": 2, "master_key": "${E2E_MASTER}", "redis_url": redis_server.url},
        "models": [{"name": "echo", "engine": "openai", "base_url": upstream.url("echo")}],
    }, tmp_path, env={"E2E_MASTER": MASTER, "MODELPORT_DATA_DIR": str(tmp_path)})
    try:
        server.start(timeout=60)
        follower = wait_for(lambda: follower_pid(server), 60, "the follower serving")
        with connection_to(server, follower) as on_follower, \
                connection_to(server, server.process.pid) as on_primary:
            created = on_follower.post("/admin/keys", headers=ADMIN, json={
                "name": "shared", "rpm": 4})
            assert created.status_code == 201, created.text
            auth = {"Authorization": f"Bearer {created.json()['key']}"}
            time.sleep(0.5)  # far less than the 5 s the key store waits to read keys again
            assert on_primary.get("/v1/models", headers=auth).status_code == 200

            wait_inside_a_minute(10)
            replies = [client.post("/v1/chat/completions", headers=auth, json={
                "model": "echo", "messages": [{"role": "user", "content": "Hi"}]})
                for client in (on_primary, on_follower) * 3]
            assert [r.status_code for r in replies] == [200, 200, 200, 200, 429, 429]
            assert {r.json()["error"]["code"] for r in replies[4:]} == {"rpm_exceeded"}

            key_id = created.json()["id"]
            assert on_follower.delete(f"/admin/keys/{key_id}", headers=ADMIN).status_code == 200
            time.sleep(0.5)
            refused = on_primary.get("/v1/models", headers=auth)
            assert refused.status_code == 401 and "revoked" in refused.text

            def usage() -> dict | None:
                rows = on_primary.get("/admin/usage?group_by=key", headers=ADMIN).json()["data"]
                row = next((r for r in rows if r["key"] == key_id), None)
                return row if row and row["requests"] >= 6 else None

            # Three requests (two answered, one refused) through each process, one row each.
            assert wait_for(usage, 15, "both processes' usage rows")["requests"] == 6

            # The console's charts are the primary's history (one sampler, every process's
            # requests), whichever process is asked: the same sample times.
            def history(client: httpx.Client) -> dict:
                reply = client.get("/admin/metrics/history", headers=ADMIN)
                assert reply.status_code == 200, reply.text
                return reply.json()

            wait_for(lambda: history(on_primary)["times"], 25, "a first point of history")
            from_follower, from_primary = history(on_follower), history(on_primary)
            assert from_follower["times"]
            assert from_primary["times"][:len(from_follower["times"])] == from_follower["times"]
    finally:
        server.stop()
        upstream.stop()
