"""`quietwire up` as a user runs it: healthy, usable, and gone without a trace on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import UserAgent
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import SERVING, serving_status
from quietwire.runtime.tls import TlsFiles

from tests.conftest import (
    free_port,
    port_open,
    quietwire_env,
    read_up_line,
    run_quietwire,
    start_up,
)


async def phone_of(state: Path, sip_port: int, user: str, password: str) -> UserAgent:
    """A phone that trusts the platform's CA, as a user would set one up."""
    connection = await SipConnection.open("127.0.0.1", sip_port, state / "pki" / "ca.pem")
    return UserAgent(connection, user, password, "127.0.0.1", sip_port)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    state, sip_port = tmp_path / "state", free_port()
    process = start_up(state, sip_port)
    yield process, state, sip_port
    if process.poll() is None:
        process.kill()
        process.wait()


async def test_up_healthy_usable_and_leaves_nothing(
    platform: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state, sip_port = platform
    line = read_up_line(process)
    assert line.startswith(f"quietwire up: sip:127.0.0.1:{sip_port};transport=tls ")
    fields = dict(part.split("=", 1) for part in line.split()[3:])
    assert Path(fields["ca"]) == state.resolve() / "pki" / "ca.pem"
    credentials = dict(pair.split(":", 1) for pair in fields["users"].split(","))
    assert set(credentials) == {"alice", "bob"}

    status: dict[str, Any] = json.loads((state / "up.json").read_text())
    pki = state / "pki"
    tls = TlsFiles(pki / "grpc.pem", pki / "grpc.key", pki / "ca.pem")
    for name, service in status["services"].items():
        async with open_channel(service["grpc"], tls) as channel:
            assert await serving_status(channel) == SERVING, name

    config = fields["config"]
    added = run_quietwire(
        "--config", config, "user", "add", "carol", "--password-stdin", stdin="carol-secret\n"
    )
    assert added.returncode == 0, added.stderr
    listed = run_quietwire("--config", config, "user", "list")
    assert listed.stdout.split() == ["alice@127.0.0.1", "bob@127.0.0.1", "carol@127.0.0.1"]

    alice = await phone_of(state, sip_port, "alice", credentials["alice"])
    assert (await alice.register()).status == 200
    await alice.close()

    pids = [status["redis"]["pid"], *(s["pid"] for s in status["services"].values())]
    ports = [sip_port] + [
        int(s[k].rsplit(":", 1)[1])
        for s in status["services"].values()
        for k in ("grpc", "metrics")
    ]
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert [port for port in ports if port_open(port)] == []
    assert list((state / "redis").glob("*.sock")) == []
    assert not (state / "up.json").exists()


def test_up_kept_state_between_runs(tmp_path: Path) -> None:
    """Users added in one run are there in the next; the CA is the same."""
    state = tmp_path / "state"
    lines = []
    for _ in range(2):
        process = start_up(state, free_port())
        try:
            lines.append(read_up_line(process).split(" ", 3)[3])
            if len(lines) == 1:
                ca = (state / "pki" / "ca.pem").read_bytes()
                run_quietwire(
                    "--config",
                    str(state / "quietwire.yaml"),
                    "user",
                    "add",
                    "dave",
                    "--password-stdin",
                    stdin="dave-secret\n",
                )
            else:
                users = run_quietwire("--config", str(state / "quietwire.yaml"), "user", "list")
                assert "dave@127.0.0.1" in users.stdout.split()
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0
    assert lines[0] == lines[1]
    assert (state / "pki" / "ca.pem").read_bytes() == ca


def test_second_up_on_the_same_state_refused(
    platform: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state, _ = platform
    read_up_line(process)
    second = run_quietwire("up", "--state-dir", str(state), "--sip-port", str(free_port()))
    assert second.returncode == 1
    assert "in use by another quietwire up" in second.stderr
    assert process.poll() is None


def test_up_without_redis_names_the_package(tmp_path: Path) -> None:
    env = quietwire_env(PATH=str(Path(sys.executable).parent))
    result = run_quietwire(
        "up", "--state-dir", str(tmp_path / "s"), "--sip-port", str(free_port()), env=env
    )
    assert result.returncode == 1
    assert "install the Debian package redis-server" in result.stderr


def wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def child_pids(state: Path) -> list[int]:
    status = json.loads((state / "up.json").read_text())
    return [status["redis"]["pid"], *(s["pid"] for s in status["services"].values())]


def test_killed_up_takes_its_children_along(
    platform: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state, _ = platform
    read_up_line(process)
    pids = child_pids(state)
    process.kill()
    process.wait()
    assert wait_gone(pids) == []


def test_a_dying_service_stops_the_platform(
    platform: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state, _ = platform
    read_up_line(process)
    status = json.loads((state / "up.json").read_text())
    pids = child_pids(state)
    os.kill(status["services"]["relay"]["pid"], signal.SIGKILL)
    assert process.wait(30) == 1
    assert wait_gone(pids) == []
