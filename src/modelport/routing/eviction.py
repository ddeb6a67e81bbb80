"""Which loaded models to unload so that one more fits (a pure function over their state).

`max_loaded` counts local models holding a worker; `memory_budget` counts the bytes of
their model files. The least recently used idle on-demand models go first; a model with
requests in flight or waiting, a model still loading and a `load: always` model never go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Resident:
    """A local model holding a worker, as eviction sees it."""

    name: str
    last_used: float
    bytes: int
    # Why it cannot be unloaded now ("2 requests in flight", "load: always"), or "".
    pinned_because: str = ""


@dataclass(frozen=True)
class Evictions:
    names: tuple[str, ...] = ()
    # Why the model cannot be loaded even after every possible eviction, or "".
    problem: str = ""


def choose_evictions(incoming: str, incoming_bytes: int, residents: Sequence[Resident],
                     max_loaded: int | None, memory_budget: int | None) -> Evictions:
    if memory_budget is not None and incoming_bytes > memory_budget:
        return Evictions(problem=f"model '{incoming}' needs {incoming_bytes:,} bytes, more "
                                 f"than server.memory_budget ({memory_budget:,}) on its own")
    count, used = len(residents), sum(r.bytes for r in residents)

    def fits() -> bool:
        return ((max_loaded is None or count + 1 <= max_loaded)
                and (memory_budget is None or used + incoming_bytes <= memory_budget))

    chosen: list[str] = []
    for resident in sorted((r for r in residents if not r.pinned_because),
                           key=lambda r: r.last_used):
        if fits():
            break
        chosen.append(resident.name)
        count, used = count - 1, used - resident.bytes
    if fits():
        return Evictions(tuple(chosen))
    limits = []
    if max_loaded is not None:
        limits.append(f"server.max_loaded is {max_loaded}")
    if memory_budget is not None:
        limits.append(f"server.memory_budget is {memory_budget:,} bytes")
    pinned = "; ".join(f"'{r.name}': {r.pinned_because}" for r in residents if r.pinned_because)
    return Evictions(problem=(
        f"cannot load model '{incoming}': {' and '.join(limits)}, and no loaded model can be "
        f"unloaded to make room ({pinned or 'none loaded'}); retry when their requests finish"))
