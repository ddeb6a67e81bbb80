"""The CPUs this process may use, as its scheduler and cgroups give them.

`os.cpu_count()` counts the host's cores: a 4-CPU container on a 64-core host would start
64 llama.cpp threads, and threads that outnumber the CPUs they may run on collapse
throughput. Every default thread count and CPU split reads `usable_cpus()` instead: the
CPU affinity (taskset, cpusets), capped by the tightest cgroup CPU quota on the way up
this process's cgroup path (v2 `cpu.max`, v1 `cpu.cfs_quota_us`; Docker `--cpus`,
Kubernetes limits), capped by MODELPORT_CPUS when set.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

CPUS_ENV = "MODELPORT_CPUS"
_PROC_SELF = Path("/proc/self")
_SYS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class CpuShare:
    logical: int  # CPUs this process can run on at once: torch threads, splits, processes
    physical: int  # distinct cores among them (llama.cpp's own preference for its threads)
    why: str  # what decided it, for `modelport check`


@dataclass(frozen=True)
class Quota:
    cpus: float
    source: str  # the file it came from


def _v2_quota(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        limit = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period


def _unescape(field: str) -> str:
    # mountinfo writes a space in a path as \040 (octal escapes).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _cgroup_folders(proc_self: Path) -> list[tuple[Path, Path, bool]]:
    """(mount point, this process's cgroup folder under it, is v2) for each mounted cgroup
    hierarchy that can hold a CPU quota."""
    try:
        memberships = (proc_self / "cgroup").read_text().splitlines()
        mounts = (proc_self / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[str, str] = {}  # "v2" or "v1" -> this process's path in that hierarchy
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    found = []
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3 or dash < 5:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        version = "v2" if fstype == "cgroup2" else (
            "v1" if fstype == "cgroup" and "cpu" in options else None)
        if version is None or version not in paths:
            continue
        root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
        path = paths[version]
        # Inside a cgroup namespace the mount's root and our path are both "/"; outside
        # it our path lies under the mount's root.
        relative = path[len(root):] if path.startswith(root) else ""
        found.append((mount_point, mount_point / relative.lstrip("/"), version == "v2"))
    return found


def cgroup_quota(proc_self: Path = _PROC_SELF) -> Quota | None:
    """The tightest CPU quota on this process's cgroup path, in CPUs (a parent's limit
    binds its children too); None when no cgroup limits CPU time."""
    tightest: Quota | None = None
    for mount_point, folder, is_v2 in _cgroup_folders(proc_self):
        read = _v2_quota if is_v2 else _v1_quota
        while True:
            cpus = read(folder)
            if cpus is not None and (tightest is None or cpus < tightest.cpus):
                name = "cpu.max" if is_v2 else "cpu.cfs_quota_us"
                tightest = Quota(cpus, str(folder / name))
            if folder == mount_point or mount_point not in folder.parents:
                break
            folder = folder.parent
    return tightest


def _physical_cores(cpus: set[int], sys_cpu: Path) -> int | None:
    cores = set()
    for cpu in cpus:
        topology = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return None
    return len(cores)


def _ranges(cpus: set[int]) -> str:
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def usable_cpus(proc_self: Path = _PROC_SELF, sys_cpu: Path = _SYS_CPU,
                environ: dict[str, str] | None = None) -> CpuShare:
    environ = os.environ if environ is None else environ
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(
        range(os.cpu_count() or 1))
    logical = len(affinity) or 1
    reasons = [f"affinity {_ranges(affinity)} ({logical} of {os.cpu_count() or logical} "
               "on this host)"]
    quota = cgroup_quota(proc_self)
    if quota is None:
        reasons.append("no cgroup CPU quota")
    else:
        # A quota of 1.5 CPUs still runs 2 threads at once; rounding down would idle half a CPU.
        logical = min(logical, max(1, math.ceil(quota.cpus - 1e-9)))
        reasons.append(f"cgroup quota {quota.cpus:g} CPUs ({quota.source})")
    cap = environ.get(CPUS_ENV, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            from modelport.errors import ConfigError

            raise ConfigError(f"{CPUS_ENV} must be a whole number of CPUs (1 or more), "
                              f"not {cap!r}")
        logical = min(logical, int(cap))
        reasons.append(f"{CPUS_ENV}={cap}")
    cores = _physical_cores(affinity, sys_cpu)
    physical = logical if cores is None else min(cores, logical)
    reasons.append("physical cores unknown" if cores is None
                   else f"{cores} physical core(s) among them")
    return CpuShare(logical, physical, "; ".join(reasons))


def share(cpus: int, among: int) -> int:
    """Each of `among` equal users' part of `cpus`: never none."""
    return max(1, cpus // max(1, among))
