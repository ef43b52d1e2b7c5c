"""Child processes of ``quietwire up``: asyncio subprocesses started in their own
process group, told to die with their parent, and stopped by PID, never by name.
A child can be started again (:mod:`quietwire.embedded.supervisor`); it counts
its restarts."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    #: The child's umask (-1: ours); 0o077 keeps every file it creates private.
    umask: int = -1
    process: asyncio.subprocess.Process | None = None
    #: When the running process was started (the event loop's clock).
    started_at: float = 0.0
    #: How many times it was started again after exiting unasked.
    restarts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(
        self, env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()
    ) -> None:
        """Start it with ``env`` added to its environment and ``pass_fds`` left open in it."""
        self.process = await asyncio.create_subprocess_exec(  # preexec_fn calls prctl only
            *self.argv,
            env={**os.environ, **self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_die_with_parent,
            pass_fds=tuple(pass_fds),
            umask=self.umask,
        )
        self.started_at = asyncio.get_running_loop().time()
        log.info("started", extra={"child": self.name, "pid": self.process.pid})

    def exited(self) -> int | None:
        """The exit status if the child has ended, else None."""
        return None if self.process is None else self.process.returncode

    async def ended(self) -> int:
        """Wait for the child to end; its exit status."""
        assert self.process is not None
        return await self.process.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, timeout: float) -> bool:
        """True if the child ended within ``timeout`` seconds."""
        if self.process is None:
            return True
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return False
        return True


def describe_status(status: int) -> str:
    """An exit status as a person reads it: ``1``, or ``killed by SIGKILL``."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return str(status)


async def stop_all(children: Sequence[Child], timeout: float) -> None:
    """SIGTERM every child, wait up to ``timeout`` for them all, then SIGKILL the rest."""
    for child in children:
        child.signal(signal.SIGTERM)
    stopped = await asyncio.gather(*(child.wait(timeout) for child in children))
    for child, ended in zip(children, stopped, strict=True):
        if not ended:
            log.warning("did not stop in time; killing", extra={"child": child.name})
            child.signal(signal.SIGKILL)
            await child.wait(5.0)
