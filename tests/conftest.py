"""Fixtures shared by every tier: a private redis-server, the quietwire command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def quietwire_env(**settings: str) -> dict[str, str]:
    """The environment for a quietwire process: ours minus any QW_* plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env.update(settings)
    return env


def run_quietwire(
    *args: str, env: Mapping[str, str] | None = None, stdin: str = "", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quietwire", *args],
        env=dict(env) if env is not None else quietwire_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_up_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("quietwire up:"):
            return line.strip()
        if not line and process.poll() is not None:
            break
    pytest.fail(f"no 'quietwire up:' line (exit status {process.poll()})")


def start_up(state: Path, sip_port: int, **settings: str) -> subprocess.Popen[str]:
    """`quietwire up` as a user starts it, its stdout readable; ``settings`` are QW_* env."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quietwire",
            "up",
            "--state-dir",
            str(state),
            "--sip-port",
            str(sip_port),
        ],
        env=quietwire_env(**settings),
        stdout=subprocess.PIPE,
        text=True,
    )


def up_fields(line: str) -> dict[str, str]:
    """``key=value`` fields of the ``quietwire up:`` line (ca, users, config)."""
    return dict(part.split("=", 1) for part in line.split()[3:])


@dataclass(frozen=True)
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(directory: Path, *args: str, config: Path | None = None) -> RedisServer:
    """A redis-server on a free loopback port; ``args`` add or override options.

    ``config`` is a configuration file put first (Sentinel mode needs one).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install the Debian package redis-server")
    port = free_port()
    first = [str(config)] if config is not None else []
    process = subprocess.Popen(
        [
            binary,
            *first,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *args,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.02)
    return RedisServer(port, process)


def stop_redis(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, for the whole session."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis(server)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The private Redis, emptied after each test."""
    yield redis_server.url
    import redis as redis_sync

    client = redis_sync.Redis(port=redis_server.port)
    client.flushall()
    client.close()
