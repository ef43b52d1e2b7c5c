"""`quietwire up` as a user runs it: healthy, usable, private on disk, and gone
without a trace on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import urllib.request
from pathlib import Path

import yaml
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import UserAgent
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import SERVING, serving_status
from quietwire.runtime.tls import TlsFiles

from tests.conftest import (
    Platform,
    free_port,
    port_open,
    quietwire_env,
    run_quietwire,
    running_platform,
    start_up,
)
from tests.support.wait import wait_line, wait_until


async def phone_of(platform: Platform, user: str) -> UserAgent:
    """A phone that trusts the platform's CA, as a user would set one up."""
    connection = await SipConnection.open("127.0.0.1", platform.sip_port, platform.ca)
    return UserAgent(connection, user, platform.users[user], "127.0.0.1", platform.sip_port)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def child_pids(platform: Platform) -> list[int]:
    status = platform.status()
    return [status["redis"]["pid"], *(s["pid"] for s in status["services"].values())]


def wait_gone(pids: list[int], timeout: float = 20) -> None:
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout, f"pids {pids} gone")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_up_healthy_usable_and_leaves_nothing(platform: Platform) -> None:
    sip_port, state = platform.sip_port, platform.state
    assert platform.line.startswith(f"quietwire up: sip:127.0.0.1:{sip_port};transport=tls ")
    fields = dict(part.split("=", 1) for part in platform.line.split()[3:])
    assert Path(fields["ca"]) == state.resolve() / "pki" / "ca.pem"
    assert set(platform.users) == {"alice", "bob"}

    status = platform.status()
    pki = state / "pki"
    tls = TlsFiles(pki / "grpc.pem", pki / "grpc.key", pki / "ca.pem")
    for name, service in status["services"].items():
        async with open_channel(service["grpc"], tls) as channel:
            assert await serving_status(channel) == SERVING, name
        with urllib.request.urlopen(f"http://{service['metrics']}/metrics", timeout=10) as reply:
            assert f'quietwire_build_info{{service="{name}"' in reply.read().decode()
    assert status["services"]["signaling"]["replica_id"].startswith("signaling-")
    # The address signaling and `quietwire calls` use is the one keyagreement bound.
    config = yaml.safe_load(platform.config.read_text())
    assert config["keyagreement_target"] == status["services"]["keyagreement"]["grpc"]

    added = platform.quietwire("user", "add", "carol", "--password-stdin", stdin="carol-secret\n")
    assert added.returncode == 0, added.stderr
    listed = platform.quietwire("user", "list")
    assert listed.stdout.split() == ["alice@127.0.0.1", "bob@127.0.0.1", "carol@127.0.0.1"]

    alice = await phone_of(platform, "alice")
    assert (await alice.register()).status == 200
    await alice.close()

    pids = child_pids(platform)
    ports = [sip_port] + [
        int(s[kind].rsplit(":", 1)[1])
        for s in status["services"].values()
        for kind in ("grpc", "metrics")
    ]
    platform.process.send_signal(signal.SIGTERM)
    assert platform.process.wait(30) == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert [port for port in ports if port_open(port)] == []
    assert list((state / "redis").glob("*.sock")) == []
    assert not (state / "up.json").exists()


def test_up_kept_state_between_runs(tmp_path: Path) -> None:
    """Users added in one run are there in the next; the CA is the same."""
    with running_platform(tmp_path) as first:
        ca = first.ca.read_bytes()
        first.quietwire("user", "add", "dave", "--password-stdin", stdin="dave-secret\n")
        first.process.send_signal(signal.SIGINT)
        assert first.process.wait(30) == 0
    with running_platform(tmp_path) as second:
        assert "dave@127.0.0.1" in second.quietwire("user", "list").stdout.split()
    assert first.line.split(" ", 3)[3] == second.line.split(" ", 3)[3]
    assert second.ca.read_bytes() == ca


def test_secrets_at_rest_are_private(tmp_path: Path) -> None:
    """Redis's dump (users' HA1 hashes, locations) is 0600; a state directory and a
    dump left open to others (by an earlier version) are made private at start,
    and the log says so."""
    state, dump = tmp_path / "state", tmp_path / "state" / "redis" / "dump.rdb"
    with running_platform(tmp_path) as first:
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(30) == 0
    assert mode(state) == 0o700
    assert mode(dump) == 0o600  # saved by Redis on its way out
    assert {mode(path) for path in (state / "redis").rglob("*") if path.is_file()} == {0o600}

    state.chmod(0o755)
    dump.chmod(0o644)
    log = tmp_path / "up.log"
    with log.open("w") as errors:
        process = start_up(state, free_port(), stderr=errors)
    try:
        wait_line(process, "quietwire up:", 90)
        assert mode(state) == 0o700
        assert mode(dump) == 0o600
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    private = [json.loads(line) for line in log.read_text().splitlines() if "now private" in line]
    assert sorted((entry["path"], entry["mode"]) for entry in private) == [
        (str(state.resolve()), "755"),
        (str(dump.resolve()), "644"),
    ]


def test_second_up_on_the_same_state_refused(platform: Platform) -> None:
    second = run_quietwire("up", "--state-dir", str(platform.state), "--sip-port", str(free_port()))
    assert second.returncode == 1
    assert "in use by another quietwire up" in second.stderr
    assert platform.process.poll() is None


def test_up_without_redis_names_the_package(tmp_path: Path) -> None:
    env = quietwire_env(PATH=str(Path(sys.executable).parent))
    result = run_quietwire(
        "up", "--state-dir", str(tmp_path / "s"), "--sip-port", str(free_port()), env=env
    )
    assert result.returncode == 1
    assert "install the Debian package redis-server" in result.stderr


def test_a_service_failing_at_start_stops_up(tmp_path: Path) -> None:
    """Signaling cannot bind the SIP port: `up` says so and leaves nothing running."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_quietwire(
            "up", "--state-dir", str(tmp_path / "s"), "--sip-port", str(busy.getsockname()[1])
        )
    assert result.returncode == 1
    assert "quietwire up: signaling exited with status 2" in result.stderr
    assert "QW_SIP_PORT" in result.stderr
    assert not (tmp_path / "s" / "up.json").exists()
    assert list((tmp_path / "s" / "redis").glob("*.sock")) == []
    assert processes_mentioning(str(tmp_path / "s")) == []


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds ``text`` (a state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_killed_up_takes_its_children_along(platform: Platform) -> None:
    pids = child_pids(platform)
    platform.process.kill()
    platform.process.wait()
    wait_gone(pids)
