"""`quietwire up` as the interop tests' platform: one per test, stopped after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, read_up_line, start_up, up_fields


@dataclass
class Platform:
    state: Path
    sip_port: int
    users: dict[str, str]

    @property
    def ca(self) -> Path:
        return self.state / "pki" / "ca.pem"

    @property
    def config(self) -> Path:
        return self.state / "quietwire.yaml"


@contextmanager
def running_platform(tmp_path: Path, **settings: str) -> Iterator[Platform]:
    """Start `quietwire up` (``settings`` as QW_* environment) and stop it afterwards."""
    state, port = tmp_path / "state", free_port()
    process = start_up(state, port, **settings)
    try:
        fields = up_fields(read_up_line(process))
        users = dict(pair.split(":", 1) for pair in fields["users"].split(","))
        yield Platform(state, port, users)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def phone_process(
    platform: Platform, user: str, *args: str, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """``quietwire phone ARGS...`` registered as ``user`` on the platform, stdout piped."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "quietwire", "phone", *args),
            *("--registrar", f"127.0.0.1:{platform.sip_port}", "--user", user),
            *("--ca", str(platform.ca)),
        ],
        env={**os.environ, "QW_PHONE_PASSWORD": platform.users[user]},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
