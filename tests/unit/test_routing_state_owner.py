"""Routing state is written by routing alone: code elsewhere changes a deployment or a
replica through their named transitions (worker_started, mirror, reconfigure, ...), never
by assigning to their fields or filling their collections."""

from __future__ import annotations

import ast
from pathlib import Path

import modelport

PACKAGE = Path(modelport.__file__).parent
ROUTING = PACKAGE / "routing"
_MUTATORS = {"append", "extend", "insert", "remove", "add", "discard", "clear", "pop", "update"}
# Names that mean a Deployment or a Replica where they hold one.
_HOLDER_WORDS = ("deployment", "replica", "served", "target")


def _routing_fields() -> set[str]:
    """Every field of Deployment and Replica: what their classes assign on self, and the
    Replica dataclass's declared fields."""
    fields: set[str] = set()
    for name in ("deployments.py", "replica.py"):
        tree = ast.parse((ROUTING / name).read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)
                    and n.name in ("Deployment", "Replica")):
            for node in ast.walk(cls):
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    fields.add(node.target.id)
                for target in _targets(node):
                    if isinstance(target, ast.Attribute) and _is_self(target.value):
                        fields.add(target.attr)
    return fields


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, (ast.Assign, ast.Delete)):
        found = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    else:
        return []
    flat: list[ast.expr] = []
    for target in found:
        flat += target.elts if isinstance(target, ast.Tuple) else [target]
    return flat


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _holds_routing_state(node: ast.expr) -> bool:
    text = ast.unparse(node).lower()
    return any(word in text for word in _HOLDER_WORDS)


def routing_state_writes(source: str, fields: set[str], distinctive: set[str]) -> list[str]:
    """Assignments to a routing field of something that is not `self`: always for a
    field only routing objects have, else where the object is named as a deployment or
    replica; and mutating calls on their collections."""
    found = []
    for node in ast.walk(ast.parse(source)):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and not _is_self(target.value) and (
                    target.attr in distinctive
                    or (target.attr in fields and _holds_routing_state(target.value))):
                found.append(f"line {node.lineno}: {ast.unparse(target)} =")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _MUTATORS and isinstance(node.func.value, ast.Attribute)):
            holder = node.func.value
            if not _is_self(holder.value) and (holder.attr in distinctive or (
                    holder.attr in fields and _holds_routing_state(holder.value))):
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}(...)")
    return sorted(found, key=lambda line: int(line.split(":")[0].removeprefix("line ")))


def _distinctive(fields: set[str]) -> set[str]:
    """Fields no other class of the package has (a `status` or `port` of something else
    is not routing state)."""
    elsewhere: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.parent == ROUTING and path.name in ("deployments.py", "replica.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(node):
                if isinstance(target, ast.Attribute) and _is_self(target.value):
                    elsewhere.add(target.attr)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                elsewhere.add(node.target.id)
    return fields - elsewhere


def test_nothing_outside_routing_assigns_to_routing_state() -> None:
    fields = _routing_fields()
    distinctive = _distinctive(fields)
    assert {"in_flight_elsewhere", "restarts", "streams", "remote_in_flight"} <= distinctive
    writes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if ROUTING in path.parents:
            continue
        found = routing_state_writes(path.read_text(), fields, distinctive)
        if found:
            writes[str(path.relative_to(PACKAGE))] = found
    assert writes == {}


def test_the_check_finds_the_writes_it_names() -> None:
    fields = _routing_fields()
    distinctive = _distinctive(fields)
    source = (
        "def f(deployment, replica, rows, record):\n"
        "    replica.status = 1\n"             # a shared name, on a replica
        "    deployment.waiting += 1\n"
        "    rows[0].in_flight_elsewhere = 2\n"  # only routing objects have it
        "    replica.streams.add(object())\n"
        "    replica.pid, other = 3, 4\n"
        "    record.status = 200\n"            # an access-log record: not routing state
        "    self_like = replica.set_status(1)\n"
    )
    assert routing_state_writes(source, fields, distinctive) == [
        "line 2: replica.status =", "line 3: deployment.waiting =",
        "line 4: rows[0].in_flight_elsewhere =", "line 5: replica.streams.add(...)",
        "line 6: replica.pid =",
    ]
