"""Which loaded models to unload so that one more fits (pure functions over their state).

`max_loaded` counts local models holding a worker; `memory_budgets` bounds the bytes they
hold on each device (`cpu`, `cuda:0`, ...), a model counting on the devices it runs on.
Idle on-demand models go first, in `eviction_order`: least recent use weighted by what
reloading costs, so a model that loads in a second goes before one that takes a minute
and was used about as long ago. A model still loading, a `load: always` model and a
`pin: true` model never go; a model with requests running or waiting goes only when the
caller allows it (`evict_busy`, once `swap_max_wait_s` has passed), after every idle one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# A model used this recently counts as used this long ago: two models used a moment ago
# are still ordered by what reloading them costs.
_MIN_IDLE_S = 0.001
# A reload costs at least this much (a process to start), whatever a measure said.
_MIN_RELOAD_S = 0.1


@dataclass(frozen=True)
class Resident:
    """A local model holding a worker, as eviction sees it."""

    name: str
    last_used: float
    # What it holds per device ({"cpu": bytes, "cuda:0": bytes}).
    bytes: Mapping[str, int] = field(default_factory=dict)
    # Why it can never be unloaded now ("load: always", "pin: true", "starting"), or "".
    pinned_because: str = ""
    # Requests running or waiting for it: it goes only when the caller allows (evict_busy).
    busy: int = 0
    # Seconds loading it again would take (measured at its last load, else estimated).
    reload_s: float = 1.0


@dataclass(frozen=True)
class Evictions:
    names: tuple[str, ...] = ()
    # Why the model cannot be loaded even after every allowed eviction, or "".
    problem: str = ""
    # Whether the plan would fit if models with requests running or waiting could go: the
    # load may wait for them (swap_max_wait_s) rather than be refused.
    busy_would_fit: bool = False


def eviction_order(residents: Sequence[Resident], now: float) -> list[Resident]:
    """Residents in the order they should go: the highest idle time per second of reload
    first. Evicting a model costs its reload time times the chance it is asked for again
    soon, and that chance falls with the time it has been idle; so a model idle 10 s that
    reloads in 1 s goes before one idle 10 s that reloads in 5 s, but one idle 100 s that
    reloads in 5 s goes before one idle 10 s that reloads in 1 s."""
    def score(resident: Resident) -> float:
        idle = max(now - resident.last_used, _MIN_IDLE_S)
        return idle / max(resident.reload_s, _MIN_RELOAD_S)
    return sorted(residents, key=score, reverse=True)


def choose_evictions(incoming: str, needs: Mapping[str, int], residents: Sequence[Resident],
                     max_loaded: int | None, memory_budgets: Mapping[str, int] | None,
                     now: float, evict_busy: bool = False) -> Evictions:
    """The residents to unload so that `incoming`, holding `needs` bytes per device, fits
    under `max_loaded` and every device's budget; or the problem when nothing allowed
    makes it fit."""
    budgets = memory_budgets or {}
    for device, size in needs.items():
        if device in budgets and size > budgets[device]:
            return Evictions(problem=(
                f"model '{incoming}' needs {size:,} bytes on {device}, more than "
                f"server.memory_budget there ({budgets[device]:,}) on its own"))
    count = len(residents)
    used = {device: sum(r.bytes.get(device, 0) for r in residents) for device in budgets}

    def fits() -> bool:
        return ((max_loaded is None or count + 1 <= max_loaded)
                and all(used[d] + needs.get(d, 0) <= budget for d, budget in budgets.items()))

    def helps(resident: Resident) -> bool:
        # Unloading a model frees room only where room is short.
        if max_loaded is not None and count + 1 > max_loaded:
            return True
        return any(resident.bytes.get(d, 0) and used[d] + needs.get(d, 0) > budget
                   for d, budget in budgets.items())

    movable = [r for r in residents if not r.pinned_because]
    idle = eviction_order([r for r in movable if not r.busy], now)
    busy = eviction_order([r for r in movable if r.busy], now)
    chosen: list[str] = []
    for resident in idle + (busy if evict_busy else []):
        if fits():
            break
        if not helps(resident):
            continue
        chosen.append(resident.name)
        count -= 1
        for device in used:
            used[device] -= resident.bytes.get(device, 0)
    if fits():
        return Evictions(tuple(chosen))
    would_fit = bool(busy) and not evict_busy and not choose_evictions(
        incoming, needs, residents, max_loaded, budgets, now, evict_busy=True).problem
    return Evictions(problem=_no_room(incoming, residents, max_loaded, budgets, evict_busy),
                     busy_would_fit=would_fit)


def _no_room(incoming: str, residents: Sequence[Resident], max_loaded: int | None,
             budgets: Mapping[str, int], evict_busy: bool) -> str:
    limits = []
    if max_loaded is not None:
        limits.append(f"server.max_loaded is {max_loaded}")
    limits += [f"server.memory_budget is {size:,} bytes on {device}"
               for device, size in budgets.items()]
    staying = [f"'{r.name}': {r.pinned_because or f'{r.busy} requests in flight'}"
               for r in residents if r.pinned_because or (r.busy and not evict_busy)]
    return (f"cannot load model '{incoming}': {' and '.join(limits)}, and no loaded model "
            f"can be unloaded to make room ({'; '.join(staying) or 'none loaded'}); retry "
            "when their requests finish")
