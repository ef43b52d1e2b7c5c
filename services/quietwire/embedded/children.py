"""Child processes of ``quietwire up``: started in their own process group,
told to die with their parent, and stopped by PID, never by name."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if ``quietwire up`` dies (Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(  # preexec_fn calls prctl only, takes no locks
            list(self.argv),
            env={**os.environ, **self.env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        log.info("started", extra={"child": self.name, "pid": self.process.pid})

    def exited(self) -> int | None:
        """The exit status if the child has ended, else None."""
        return None if self.process is None else self.process.poll()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """True if the child ended within ``timeout`` seconds."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def stop_all(children: Sequence[Child], timeout: float) -> None:
    """SIGTERM every child, wait up to ``timeout`` in all, then SIGKILL the rest."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if not child.wait(max(0.0, deadline - time.monotonic())):
            log.warning("did not stop in time; killing", extra={"child": child.name})
            child.signal(signal.SIGKILL)
            child.wait(5.0)
