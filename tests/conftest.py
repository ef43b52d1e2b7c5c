"""Fixtures shared by every tier: a private redis-server, the quietwire command,
and a running `quietwire up` platform (``platform``)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import redis as redis_sync
import yaml
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import UserAgent

from tests.support.wait import wait_line, wait_until

#: Seconds `quietwire up` gets to print its line (it starts Redis and three services).
UP_TIMEOUT = 90


#: Every port `free_port` has handed out in this run: the kernel may give a port just
#: released to the next bind of port 0, so two calls before anything binds (a test's
#: plain SIP port, then its platform's TLS port) could otherwise get the same one.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now for TCP and for UDP (SIP and relays listen on both), for
    peers that cannot bind port 0 and say which port they got (Linphone, stunnel,
    redis-server); never one handed out before in this run, though another process may
    take it before they bind it."""
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if port in _HANDED_OUT:
                continue
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:  # some process holds it for UDP: another
                continue
            _HANDED_OUT.add(port)
            return port
    raise AssertionError("no new loopback port free for both TCP and UDP in 100 tries")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def quietwire_env(**settings: str) -> dict[str, str]:
    """The environment for a quietwire process: ours minus any QW_* plus ``settings``.

    Metrics are off unless ``settings`` ask for them: the default ports (9101-9103)
    may be held by another test's service on a shared machine.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    env["QW_METRICS_PORT"] = "0"
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


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM ``process`` (it drains and exits, as on a pod's deletion), SIGKILL it
    if it is not gone within ``timeout``; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass(frozen=True)
class ServiceProcess:
    """A service started with ``QW_GRPC_PORT=0``, and the ports it reported it bound."""

    process: subprocess.Popen[str]
    ports: dict[str, int | None]

    @property
    def grpc_port(self) -> int:
        port = self.ports["grpc_port"]
        assert port is not None
        return port


def start_service(
    name: str,
    env: Mapping[str, str],
    prefix: Sequence[str] = (),
    timeout: float = 30,
    pass_fds: Sequence[int] = (),
    **popen: Any,
) -> ServiceProcess:
    """``quietwire NAME`` on a gRPC port the kernel picks (unless ``env`` names one),
    once it listens: it reports its ports on a pipe (``QW_READY_FD``).

    ``prefix`` runs it through another command (``ip netns exec ...``); ``pass_fds``
    are more descriptors it inherits (a listening socket named by ``QW_METRICS_FD``);
    ``popen`` goes to :class:`subprocess.Popen` (``stderr=...``).
    """
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, encoding="utf-8") as ready:
        try:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "quietwire", name],
                env={"QW_GRPC_PORT": "0", **env, "QW_READY_FD": str(write_end)},
                pass_fds=(write_end, *pass_fds),
                text=True,
                **popen,
            )
        finally:
            os.close(write_end)
        readable, _, _ = select.select([ready], [], [], timeout)
        line = ready.readline() if readable else ""
    if not line:
        process.kill()
        pytest.fail(f"quietwire {name} did not report its ports (exit status {process.wait()})")
    return ServiceProcess(process, json.loads(line))


def start_up(
    state: Path,
    sip_port: int,
    stderr: IO[str] | None = None,
    up_args: Sequence[str] = (),
    **settings: str,
) -> subprocess.Popen[str]:
    """`quietwire up` as a user starts it, its stdout readable; ``up_args`` are more of
    its options (``--relays 2``), ``settings`` are QW_* env."""
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
            *up_args,
        ],
        env=quietwire_env(**settings),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def up_fields(line: str) -> dict[str, str]:
    """``key=value`` fields of the ``quietwire up:`` line (ca, users, config)."""
    return dict(part.split("=", 1) for part in line.split()[3:])


@dataclass(frozen=True)
class Platform:
    """A running `quietwire up`: its process, state directory, SIP port and demo users."""

    process: subprocess.Popen[str]
    state: Path
    sip_port: int
    #: The line it printed once healthy (``quietwire up: sip:... ca=... users=... config=...``).
    line: str

    @property
    def users(self) -> dict[str, str]:
        """Demo usernames and their passwords."""
        return dict(pair.split(":", 1) for pair in up_fields(self.line)["users"].split(","))

    @property
    def ca(self) -> Path:
        return self.state / "pki" / "ca.pem"

    @property
    def config(self) -> Path:
        return self.state / "quietwire.yaml"

    def status(self) -> dict[str, Any]:
        """``up.json``: each child's pid, and each service's gRPC address."""
        found: dict[str, Any] = json.loads((self.state / "up.json").read_text())
        return found

    def quietwire(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``quietwire --config <its config> ARGS...``."""
        return run_quietwire("--config", str(self.config), *args, stdin=stdin)

    def redis(self) -> redis_sync.Redis:
        """A client of its Redis (close it after use)."""
        config = yaml.safe_load(self.config.read_text())
        client: redis_sync.Redis = redis_sync.Redis.from_url(
            config["redis_url"], password=config["redis_password"]
        )
        return client

    def calls_showing(self, text: str, timeout: float = 15) -> str:
        """``quietwire calls`` once its listing shows ``text``."""

        def listing() -> str:
            shown = self.quietwire("calls").stdout
            return shown if text in shown else ""

        return wait_until(listing, timeout, f"`quietwire calls` showing {text!r}", interval=0.3)


@contextmanager
def running_platform(
    tmp_path: Path, stderr: IO[str] | None = None, up_args: Sequence[str] = (), **settings: str
) -> Iterator[Platform]:
    """`quietwire up` in ``tmp_path/state`` (``up_args`` more of its options,
    ``settings`` as QW_* environment, the services' JSON log lines to ``stderr``),
    stopped after."""
    state, port = tmp_path / "state", free_port()
    process = start_up(state, port, stderr, up_args, **settings)
    try:
        yield Platform(process, state, port, wait_line(process, "quietwire up:", UP_TIMEOUT))
    finally:
        stop_process(process)


async def agent(platform: Platform, user: str, password: str | None = None) -> UserAgent:
    """A SIP user agent for ``user`` over TLS to the platform (a demo user's password
    unless ``password`` is given)."""
    connection = await SipConnection.open("127.0.0.1", platform.sip_port, platform.ca)
    secret = password if password is not None else platform.users[user]
    return UserAgent(connection, user, secret, "127.0.0.1", platform.sip_port)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A real `quietwire up` (Redis, PKI, the three services, alice and bob) for one test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: install the Debian package redis-server")
    with running_platform(tmp_path) as running:
        yield running


@dataclass(frozen=True)
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(
    directory: Path, *args: str, config: Path | None = None, port: int | None = None
) -> RedisServer:
    """A redis-server on ``port`` (by default a free loopback port); ``args`` add or
    override options.

    ``config`` is a configuration file put first (Sentinel mode needs one).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install the Debian package redis-server")
    port = port or free_port()
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

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited with status {process.returncode}")
        return port_open(port)

    try:
        wait_until(listening, 10, f"redis-server listening on port {port}")
    except AssertionError as exc:
        process.kill()
        pytest.fail(str(exc))
    return RedisServer(port, process)


def stop_redis(server: RedisServer) -> None:
    stop_process(server.process, 10)


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
    client = redis_sync.Redis(port=redis_server.port)
    client.flushall()
    client.close()
