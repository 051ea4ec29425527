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


@pytest.mark.parametrize(("cpus", "cpu_default", "gpu_default"), [(1, 1, 1), (2, 1, 1), (4, 2, 3), (16, 8, 12),
                                                                    (64, 8, 32)])
def test_api_workers_default_by_cores_and_device(monkeypatch, cpus: int, cpu_default: int,
                                                 gpu_default: int) -> None:
    from app import serve

    monkeypatch.setattr(serve, "available_cpus", lambda: cpus)
    assert (serve.default_api_workers(gpu=False), serve.default_api_workers(gpu=True)) == (cpu_default, gpu_default)
    assert serve.default_api_workers(gpu=False, engines=3) == max(3, cpu_default)  # an API process per engine core
    assert serve.default_engine_threads(2) == max(1, cpus // 2)


@pytest.mark.parametrize(("device", "node", "cuda_build", "visible", "gpu"), [
    ("cuda", False, False, None, True),  # named: whatever this machine has (the engine fails loudly if wrong)
    ("cuda:1", False, False, None, True),
    ("cpu", True, True, None, False),
    ("auto", True, True, None, True),
    ("auto", True, True, "", False),  # CUDA_VISIBLE_DEVICES hides every device, from torch too
    ("auto", True, True, "-1", False),
    ("auto", True, False, None, False),  # the driver is there, the CPU build of torch cannot use it
    ("auto", False, True, None, False),  # a CUDA build on a machine without the driver's device node
])
def test_serving_on_a_gpu_is_judged_without_torch(monkeypatch, tmp_path: Path, device: str, node: bool,
                                                  cuda_build: bool, visible: str | None, gpu: bool) -> None:
    from app import serve
    from app.settings import ModelSpec

    if node:
        (tmp_path / "nvidiactl").touch()
    real = serve.cuda_visible
    monkeypatch.setattr(serve, "cuda_visible", lambda: real(tmp_path))
    monkeypatch.setattr(serve, "torch_cuda_build", lambda: cuda_build)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    specs = [ModelSpec(name="m", task="sudoku", path=tmp_path, device=device)]
    assert serve.serves_on_gpu(specs) is gpu


def test_the_torch_build_is_read_from_its_version_file() -> None:
    """Here (CI, this VM) torch is the CPU build; the file says so without importing torch."""
    import importlib.util

    from app.serve import torch_cuda_build

    origin = importlib.util.find_spec("torch").origin  # type: ignore[union-attr]
    text = (Path(origin).parent / "version.py").read_text()  # type: ignore[arg-type]
    assert torch_cuda_build() is ("cuda: Optional[str] = None" not in text and "cuda = None" not in text)


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


def test_api_processes_get_a_socket_each_and_the_kernel_spreads_connections_over_them() -> None:
    """listening_sockets: N sockets on one port (SO_REUSEPORT); 400 connections land on every one of them, where
    one shared socket's connections went mostly to a few processes (86 of 256 to one of 8)."""
    import select
    import socket
    import sys

    import pytest

    from app.serve import listening_sockets

    if not sys.platform.startswith("linux"):
        pytest.skip("SO_REUSEPORT balances connections on Linux only (elsewhere: one shared socket)")
    socks = listening_sockets("127.0.0.1", 0, 4)
    ports = {s.getsockname()[1] for s in socks}
    assert len(socks) == 4 and len(ports) == 1
    assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
    port = ports.pop()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(400)]
    accepted = [0] * 4
    try:
        while sum(accepted) < len(clients):
            ready, _, _ = select.select(socks, [], [], 5)
            assert ready, f"only {sum(accepted)} of {len(clients)} connections were accepted"
            for s in ready:
                conn, _ = s.accept()
                conn.close()
                accepted[socks.index(s)] += 1
    finally:
        for c in clients + socks:
            c.close()
    assert min(accepted) >= 50, accepted  # 100 each expected


def test_a_port_in_use_fails_the_start_even_with_reuse_port() -> None:
    """SO_REUSEPORT must not let a second server silently share the port of one already running."""
    import pytest

    from app.serve import listening_sockets

    first = listening_sockets("127.0.0.1", 0, 2)
    try:
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", first[0].getsockname()[1], 2)
    finally:
        for s in first:
            s.close()


def test_a_supervisor_that_cannot_bind_leaves_no_run_directory(tmp_path, monkeypatch) -> None:
    import pytest

    from app.serve import Supervisor, listening_socket
    from app.settings import Settings

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the supervisor makes its run directory
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # run() sets it: restored afterwards
    taken = listening_socket("127.0.0.1", 0)
    try:
        sup = Supervisor(Settings(weights_dir=tmp_path), [], "127.0.0.1", taken.getsockname()[1], 2)
        with pytest.raises(OSError):
            sup.run()
    finally:
        taken.close()
    assert not list(tmp_path.glob("recursolve-*"))


def test_without_reuse_port_the_processes_share_one_socket(monkeypatch) -> None:
    """Where setting SO_REUSEPORT fails (some sandboxes), serving goes on with one shared socket."""
    import socket

    from app import serve

    real = socket.socket.setsockopt

    def no_reuse_port(self, level, option, value):  # type: ignore[no-untyped-def]
        if option == socket.SO_REUSEPORT:
            raise OSError(92, "Protocol not available")
        return real(self, level, option, value)

    monkeypatch.setattr(socket.socket, "setsockopt", no_reuse_port)
    socks = serve.listening_sockets("127.0.0.1", 0, 3)
    try:
        assert len(socks) == 1
    finally:
        socks[0].close()
    one = serve.listening_sockets("127.0.0.1", 0, 1)
    assert len(one) == 1
    one[0].close()
