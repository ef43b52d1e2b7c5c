"""Processes the benchmarks start and measure: ports, readiness, CPU, Redis."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def wait_port(
    port: int,
    process: subprocess.Popen[bytes],
    what: str,
    timeout: float = 20,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def wait_ready(ready: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Wait for the line a quietwire service writes on its ``QW_READY_FD`` once it
    listens; ``ready`` is our end of that pipe (closed here)."""
    with os.fdopen(ready, "rb") as pipe:
        readable, _, _ = select.select([pipe], [], [], timeout)
        if not (readable and pipe.readline()):
            process.kill()
            raise RuntimeError(f"{what} did not listen (exit status {process.wait()})")


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def machine_cpu_seconds() -> float:
    """CPU time all cores spent busy (user, system, interrupts: kernel forwarding too)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICKS


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


@contextlib.contextmanager
def redis_server(work: Path, core: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A throwaway redis-server on ``core``: the process and its port (and the
    socket ``redis-<port>.sock`` in ``work``, for clients in other network namespaces)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *("taskset", "-c", core, "redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--unixsocket", str(work / f"redis-{port}.sock")),
            *("--save", "", "--appendonly", "no", "--dir", str(work)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process, "redis-server")
        yield process, port
    finally:
        process.terminate()
        process.wait(20)
