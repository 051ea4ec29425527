"""Sizing `recursolve serve` to the CPUs a container really has (cgroup quota), not the host's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.serve import available_cpus

CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("files", "want"), [
    ({"cpu.max": "50000 100000\n"}, 1),  # a 0.5-CPU limit still gets one
    ({"cpu.max": "max 100000\n"}, CPUS),  # no limit: the CPUs this process may run on
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, CPUS),  # cgroup v1, no limit
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1, 1 CPU
    ({"cpu.max": "garbage\n"}, CPUS),  # unreadable: fall back
    ({}, CPUS),  # no cgroup files at all
])
def test_available_cpus_follows_the_cgroup_quota(tmp_path: Path, files: dict[str, str], want: int) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cpus(tmp_path) == want


def test_a_quota_above_the_affinity_is_capped(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(f"{(CPUS + 8) * 100000} 100000\n")
    assert available_cpus(tmp_path) == CPUS
