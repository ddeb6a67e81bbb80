"""What the primary and its followers tell each other, as plain JSON-ready dicts.

The primary sends the table of its local replicas (`replica_table`); a follower applies
it to its own deployments of the same models (`apply_table`). A follower sends which
models it is using (`usage_report`); the primary counts that in when it decides what is
idle or may be evicted (`apply_reports`). Each process's requests in flight on each
worker reach the others the same way (`in_flight_by_replica`, `apply_in_flight`), so
least_busy and prefix affinity weigh every process's requests. Errors cross as their
status, type and message so a follower answers exactly what the primary would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from modelport.errors import ConfigError, ModelportError
from modelport.routing.deployments import Deployment, Replica

# Set in a follower's environment by the primary (the secret is never logged).
CONTROL_URL_ENV = "MODELPORT_CONTROL_URL"
CONTROL_SECRET_ENV = "MODELPORT_CONTROL_SECRET"
PROCESS_INDEX_ENV = "MODELPORT_PROCESS_INDEX"

def replica_table(deployments: Iterable[Deployment]) -> dict[str, list[dict[str, Any]]]:
    """Each local model's workers as the primary knows them now."""
    return {d.name: [r.row() for r in d.local_replicas] for d in deployments if d.is_local}


def apply_table(deployments: Iterable[Deployment], table: Mapping[str, list[dict[str, Any]]],
                readdress: Callable[[Deployment, Replica], None]) -> None:
    """Make this process's local replicas what the primary's table says; `readdress` is
    called for a replica whose address or secret changed (its provider must follow).
    A replica the primary does not know (yet: a model added by a reload the primary has
    not made) stays as it is."""
    for deployment in deployments:
        rows = {row["name"]: row for row in table.get(deployment.name, ())}
        for replica in deployment.local_replicas:
            row = rows.get(replica.name)
            if row is None:
                continue
            if replica.mirror(row):
                readdress(deployment, replica)


def usage_report(deployments: Iterable[Deployment], now: float) -> dict[str, dict[str, Any]]:
    """For each local model this process has used: its requests in flight here (in all,
    and on each worker that has some) and how long ago it was last used."""
    return {d.name: {"in_flight": d.in_flight, "idle_s": round(now - d.last_used, 3),
                     "replicas": {r.name: r.in_flight for r in d.local_replicas if r.in_flight}}
            for d in deployments if d.is_local and d.last_used}


def in_flight_by_replica(reports: Iterable[Mapping[str, Mapping[str, Any]]],
                         deployments: Iterable[Deployment] = ()) -> dict[str, int]:
    """Requests in flight on each worker through the processes that sent `reports`, plus
    this process's own on the workers of `deployments` (when given)."""
    totals: dict[str, int] = {}
    for report in reports:
        for use in report.values():
            for name, count in use.get("replicas", {}).items():
                totals[name] = totals.get(name, 0) + int(count)
    for deployment in deployments:
        for replica in deployment.local_replicas if deployment.is_local else ():
            if replica.in_flight:
                totals[replica.name] = totals.get(replica.name, 0) + replica.in_flight
    return totals


def apply_in_flight(deployments: Iterable[Deployment], counts: Mapping[str, int]) -> None:
    """The other processes' requests in flight on each worker, as `remote_in_flight` (what
    least_busy adds to a replica's own count). Workers of ours are never shared through
    Redis (routing.shared_state), so for them these counts are the only source."""
    for deployment in deployments:
        for replica in deployment.local_replicas if deployment.is_local else ():
            replica.count_elsewhere(int(counts.get(replica.name, 0)))


def apply_reports(deployments: Iterable[Deployment],
                  reports: Iterable[Mapping[str, Mapping[str, Any]]], now: float) -> None:
    """Count the followers' use of each local model into the primary's deployments: their
    requests in flight (`in_flight_elsewhere`, and each worker's `remote_in_flight`) and
    their last use (`last_used`)."""
    reports = list(reports)
    by_name = {d.name: d for d in deployments if d.is_local}
    apply_in_flight(by_name.values(), in_flight_by_replica(reports))
    elsewhere = dict.fromkeys(by_name, 0)
    last_used = {name: deployment.last_used for name, deployment in by_name.items()}
    for report in reports:
        for name, use in report.items():
            deployment = by_name.get(name)
            if deployment is None:
                continue
            in_flight = int(use["in_flight"])
            elsewhere[name] += in_flight
            idle_s = 0.0 if in_flight else float(use["idle_s"])  # a long stream is use
            last_used[name] = max(last_used[name], now - idle_s)
    for name, count in elsewhere.items():
        by_name[name].used_elsewhere(count, last_used[name])


def error_to_wire(error: ModelportError) -> dict[str, Any]:
    return {"status": error.status, "type": error.type, "code": error.code,
            "param": error.param, "message": error.message, "headers": error.headers}


def error_from_wire(data: Mapping[str, Any]) -> ModelportError:
    """The primary's error, to be raised here (a config error stays a ConfigError)."""
    kind = ConfigError if data.get("type") == ConfigError.type else ModelportError
    error = kind(str(data.get("message", "")), param=data.get("param"), code=data.get("code"),
                 headers=dict(data.get("headers") or {}))
    error.status = int(data.get("status", 500))
    error.type = str(data.get("type", ModelportError.type))
    return error
