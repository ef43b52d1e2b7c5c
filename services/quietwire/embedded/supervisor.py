"""Keeping ``quietwire up``'s children running.

A child (a service or Redis) that exits unasked is started again after a delay
that doubles from :data:`RESTART_FIRST` up to :data:`RESTART_CAP`, and falls
back to the first once the child has run :data:`RESTART_STABLE` seconds: a
child that crashes at once is not restarted in a tight loop, one that crashed
once after an hour comes back at once. Each exit is one log line naming the
child, its exit status and the delay; a start that fails (the child exits
before it listens, or its old port is taken) is retried on the same schedule,
and said so.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quietwire.embedded.children import Child, describe_status

log = logging.getLogger(__name__)

#: Seconds before the first restart; doubles with each restart that follows soon.
RESTART_FIRST = 0.5
#: The longest wait between restarts.
RESTART_CAP = 30.0
#: A child that ran this long before exiting is restarted after RESTART_FIRST again.
RESTART_STABLE = 60.0
#: Seconds a child whose start failed gets to be gone before the next attempt.
REAP_TIMEOUT = 5.0

#: Starts a child again and returns once it listens; raises :data:`START_FAILURES`.
Restart = Callable[[], Awaitable[None]]


class StartFailed(RuntimeError):
    """A child did not come up again; the message says which and why."""


#: What a failed restart raises: the child exited before listening, its port
#: is taken, or it did not listen in time.
START_FAILURES = (StartFailed, OSError, TimeoutError)


@dataclass(slots=True)
class Backoff:
    """Delays between restarts: doubling from ``first`` to ``cap``, reset after a stable run."""

    first: float = RESTART_FIRST
    cap: float = RESTART_CAP
    stable: float = RESTART_STABLE
    upcoming: float = RESTART_FIRST

    def __post_init__(self) -> None:
        self.upcoming = self.first

    def after(self, ran: float) -> float:
        """The delay before the next start, for a child that ran ``ran`` seconds."""
        if ran >= self.stable:
            self.upcoming = self.first
        delay = self.upcoming
        self.upcoming = min(self.upcoming * 2, self.cap)
        return delay


async def keep_running(child: Child, restart: Restart, restarted: Callable[[], None]) -> None:
    """Start ``child`` again (by ``restart``) each time it exits, until cancelled;
    ``restarted`` is called after each successful restart (to publish the new pid)."""
    loop = asyncio.get_running_loop()
    backoff = Backoff()
    while True:
        status = await child.ended()
        delay = backoff.after(loop.time() - child.started_at)
        log.warning(
            f"{child.name} exited ({describe_status(status)}): restarting in {delay:.1f} s",
            extra={"child": child.name, "status": status, "delay": delay},
        )
        while True:
            await asyncio.sleep(delay)
            try:
                await restart()
                break
            except START_FAILURES as exc:
                await _reap(child)
                delay = backoff.after(0.0)
                log.warning(
                    f"{child.name} did not start again: {exc}; retrying in {delay:.1f} s",
                    extra={"child": child.name, "delay": delay},
                )
        child.restarts += 1
        log.info(
            f"{child.name} restarted",
            extra={"child": child.name, "pid": child.pid, "restarts": child.restarts},
        )
        restarted()


async def _reap(child: Child) -> None:
    """Make sure a child whose start failed is gone (it may hang, not listening)."""
    if child.exited() is None:
        child.signal(signal.SIGKILL)
        await child.wait(REAP_TIMEOUT)
