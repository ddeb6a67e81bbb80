"""A model with `replicas: 2`: two real llama.cpp workers behind one name. Concurrent
streams spread over both; a replica killed under load costs no request that had not yet
started streaming and comes back; a stopped (SIGSTOP) replica is out of rotation within
its stall timeout: its streams end with `replica_stalled`, no request waits longer than
stall_timeout_s + 2 s, and a new worker answers within stall_timeout_s + 5 s."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.models import SMOLLM2
from support.server import ModelportServer, pid_alive, wait_for

MODEL = "smollm2"
STALL_S = 3.0
STREAMS = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = ModelportServer({
        "server": {"health_check_interval_s": 0.5, "worker_stall_timeout_s": STALL_S},
        "models": [{"name": MODEL, "engine": "llamacpp", "path": SMOLLM2, "replicas": 2,
                    "context_length": 1024, "parallel": 4}],
    }, tmp_path_factory.mktemp("replicas"))
    instance.start()
    try:
        both_ready(instance)
        yield instance
    finally:
        instance.stop()


def replicas(server) -> dict[str, dict]:
    return {r["name"]: r for r in server.health()["models"][MODEL]["replicas"]}


def both_ready(server, timeout: float = 120) -> dict[str, dict]:
    return wait_for(lambda: (lambda found: found if all(
        r["state"] == "ready" for r in found.values()) else None)(replicas(server)),
        timeout, "both replicas ready")


def stream(server, max_tokens: int = 24, timeout: float = 120,
           begun: threading.Event | None = None, **fields) -> dict:
    """One streamed chat: its status, the replica that answered, whether text came, and
    whether it ended with [DONE]; `begun` is set at its first line."""
    outcome: dict = {"started": False}
    began = time.monotonic()
    try:
        with httpx.stream("POST", server.base_url + "/chat/completions", timeout=timeout, json={
                "model": MODEL, "stream": True, "max_tokens": max_tokens, **fields,
                "messages": [{"role": "user", "content": "Count from one to twenty."}]}) as reply:
            outcome["status"] = reply.status_code
            outcome["replica"] = reply.headers.get("x-modelport-replica")
            lines = []
            for line in reply.iter_lines():
                outcome["started"] = reply.status_code == 200
                if begun is not None and line:
                    begun.set()
                lines.append(line)
            outcome["done"] = "data: [DONE]" in lines
            outcome["body"] = "\n".join(lines)
    except httpx.HTTPError as error:
        outcome["error"] = repr(error)
    outcome["ended"] = time.monotonic()
    outcome["took"] = outcome["ended"] - began
    return outcome


def many_streams(server, count: int = STREAMS, **kwargs) -> list[dict]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: stream(server, **kwargs), range(count)))


def test_concurrent_streams_spread_over_both_replicas(server):
    outcomes = many_streams(server)
    assert all(o.get("status") == 200 and o["done"] for o in outcomes), outcomes
    served_by = [o["replica"] for o in outcomes]
    assert set(served_by) == {f"{MODEL}#0", f"{MODEL}#1"}, served_by
    # Least busy: neither replica takes (nearly) everything.
    assert min(served_by.count(f"{MODEL}#0"), served_by.count(f"{MODEL}#1")) >= STREAMS // 4
    log = server.log_path.read_text()
    assert f"replica={MODEL}#0" in log and f"replica={MODEL}#1" in log
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    for index in (0, 1):
        assert f'modelport_replica_ready{{model="{MODEL}",replica="{MODEL}#{index}"}} 1.0' \
            in metrics


def test_a_killed_replica_fails_no_request_that_had_not_started_and_comes_back(server):
    before = both_ready(server)
    victim = before[f"{MODEL}#0"]
    results: list[dict] = []
    load = threading.Thread(target=lambda: results.extend(many_streams(server, max_tokens=48)))
    load.start()
    time.sleep(1.0)  # the streams are spread and running
    os.kill(victim["pid"], signal.SIGKILL)
    # New requests while the replica is down: the other one answers them.
    during = many_streams(server, count=8)
    load.join(180)
    assert not load.is_alive()
    outcomes = results + during
    not_started = [o for o in outcomes if not o["started"]]
    assert not_started == [], not_started
    # Streams that were running on the killed replica end with an error event, not a hang.
    for outcome in outcomes:
        assert outcome["done"] or "error" in outcome["body"], outcome
    back = both_ready(server)
    assert back[f"{MODEL}#0"]["pid"] != victim["pid"]
    assert back[f"{MODEL}#0"]["restarts"] >= victim["restarts"] + 1
    assert all(o["status"] == 200 for o in many_streams(server, count=4))


def test_a_stopped_replica_is_replaced_within_its_stall_timeout_and_nothing_waits_longer(
        server):
    before = both_ready(server)
    victim = before[f"{MODEL}#1"]
    # Long streams under way on both replicas (least_busy spreads them), each past its
    # first token when the worker is stopped.
    begun = [threading.Event() for _ in range(4)]
    running: list[dict] = [{} for _ in begun]
    long_streams = [threading.Thread(target=lambda i=i: running[i].update(
        stream(server, max_tokens=96, begun=begun[i], ignore_eos=True))) for i in range(4)]
    for thread in long_streams:
        thread.start()
    assert all(event.wait(30) for event in begun), "the long streams did not start"
    replaced: dict = {}

    def watch_for_the_new_worker() -> None:
        replaced["replica"] = wait_for(lambda: (
            lambda r: r if r["state"] == "ready" and r["pid"] != victim["pid"] else None)(
                replicas(server)[f"{MODEL}#1"]), STALL_S + 20, "the stopped worker replaced")
        replaced["after"] = time.monotonic() - stopped_at

    stopped_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGSTOP)
    watcher = threading.Thread(target=watch_for_the_new_worker)
    watcher.start()
    try:
        # New requests keep coming while the worker is stopped: some reach it before it
        # is taken out of rotation (and must move to the other replica), the rest do not.
        arrivals: list[dict] = []
        senders = []
        for _ in range(6):
            senders.append(threading.Thread(target=lambda: arrivals.append(
                stream(server, max_tokens=8, timeout=30))))
            senders[-1].start()
            time.sleep(0.4)
        for thread in senders + long_streams:
            thread.join(STALL_S + 30)
        assert not any(t.is_alive() for t in senders + long_streams), "a request hung"
    finally:
        if pid_alive(victim["pid"]):
            os.kill(victim["pid"], signal.SIGCONT)
    on_victim = [o for o in running if o["replica"] == f"{MODEL}#1"]
    assert on_victim and len(on_victim) < len(running), running
    for outcome in on_victim:
        # Cut off within the stall timeout of the stop, with the stall's own error event.
        assert outcome["ended"] - stopped_at < STALL_S + 2, outcome
        assert outcome["done"] and '"code":"replica_stalled"' in outcome["body"].replace(
            " ", ""), outcome["body"][-400:]
    for outcome in running:
        if outcome not in on_victim:
            assert outcome["done"] and '"error"' not in outcome["body"], outcome
    for outcome in arrivals:
        assert outcome["status"] == 200 and outcome["done"], outcome
        assert outcome["replica"] == f"{MODEL}#0", outcome
        assert outcome["took"] < STALL_S + 2, outcome
    # Killed (SIGKILL reaches a stopped process) and a new worker answering within
    # stall_timeout_s + 5 of the stop.
    watcher.join(STALL_S + 25)
    assert not pid_alive(victim["pid"])
    assert replaced["after"] < STALL_S + 5, replaced
    assert replaced["replica"]["restarts"] >= victim["restarts"] + 1
