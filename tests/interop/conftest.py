"""`quietwire up` as the interop tests' platform: one per test, stopped after it."""

from __future__ import annotations

import signal
import subprocess
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
