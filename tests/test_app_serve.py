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


def test_an_api_process_never_loads_torch() -> None:
    """A spawned API process imports the parent's main module (app.cli) again, then the app: none of it may pull
    in torch (models/cli.py's commands are registered when the command line runs, not on import)."""
    import subprocess
    import sys

    code = ("import sys, app.cli, app.serve, app.main; app.main.create_app; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"torch was imported by the API process's modules:\n{done.stderr[-2000:]}"


async def test_connections_on_the_shared_socket_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket created as IPPROTO_TCP: with Nagle on, every
    response of an API process on the standard event loop waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from app.serve import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname())
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert seen and seen[0] != 0
