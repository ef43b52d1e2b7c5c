"""Waiting for something to happen, bounded: the one place tests poll.

A test waits for the event it needs (a port open, a status reached, a line
printed), never for a guessed number of seconds. Each wait has a deadline and
fails naming what never happened.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
#: How often a condition is asked again.
INTERVAL = 0.05

Description = str | Callable[[], str]


def _failure(what: Description, timeout: float) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"{text}: not within {timeout:g} s")


def wait_until(
    check: Callable[[], T], timeout: float, what: Description, interval: float = INTERVAL
) -> T:
    """Ask ``check`` until it returns something true, and return that.

    ``what`` (or what it returns, asked at the deadline) names the event in the
    failure. ``check`` may raise to give up early (a process died).
    """
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise _failure(what, timeout)
        time.sleep(interval)
    return result


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float,
    what: Description,
    interval: float = INTERVAL,
) -> T:
    """:func:`wait_until` for an async ``check``, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := await check()):
        if loop.time() > deadline:
            raise _failure(what, timeout)
        await asyncio.sleep(interval)
    return result


async def until(
    condition: Callable[[], T], timeout: float, what: Description, interval: float = INTERVAL
) -> T:
    """:func:`eventually` for a plain ``condition`` on state the event loop changes
    (a table in this process): asked again after each pause of the loop."""

    async def check() -> T:
        return condition()

    return await eventually(check, timeout, what, interval)


def wait_line(process: subprocess.Popen[str], prefix: str, timeout: float = 30) -> str:
    """The first line ``process`` prints on stdout that starts with ``prefix``, stripped."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {prefix!r} line (exit status {process.poll()})")
