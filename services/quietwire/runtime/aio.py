"""asyncio helpers: the tasks an owner cancels when it closes (:class:`Tasks`), and
``try``/``finally`` with an ``await`` in the ``finally``, for modules compiled with mypyc.

mypyc (tools/build_native.py) mishandles a coroutine that suspends while it
handles an exception (an ``await`` in an ``except`` or ``finally`` block, or in
the ``__aexit__`` of an ``async with`` left by an exception) when that exception
came through an awaited future, as every I/O error does: it stays in the
thread's handled-exception state (``sys.exc_info()``) after the block, and a
later compiled ``finally`` that awaits raises it again, out of unrelated code.
So compiled modules never await in those places (tests/unit/test_native_sources.py
checks): they note the exception, leave the handler, and await after it, here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Tasks:
    """The tasks an owner (a listener) started and still runs: held until each ends
    (asyncio keeps only weak references), all cancelled when the owner closes."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many are running."""
        return len(self._running)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def wait(self) -> None:
        """Wait until every task running now has ended (what they raised is theirs)."""
        await asyncio.gather(*self._running, return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every task still running and wait until they have ended."""
        for task in list(self._running):
            task.cancel()
        await self.wait()


async def finally_await(
    work: Awaitable[T], cleanup: Callable[[BaseException | None], Awaitable[object]]
) -> T:
    """``await work``, then ``await cleanup(what work raised, or None)`` whatever
    happened, then ``work``'s result or exception: ``try``/``finally``, with the
    cleanup run outside the exception handler."""
    failure: BaseException | None = None
    try:
        result = await work
    except BaseException as error:  # raised again below, once cleaned up
        failure = error
    await cleanup(failure)
    if failure is not None:
        raise failure
    return result
