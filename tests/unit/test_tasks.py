"""`quietwire.runtime.aio.Tasks`: what an owner started is held while it runs, let go
when it ends, and cancelled or awaited when the owner closes."""

from __future__ import annotations

import asyncio

from quietwire.runtime.aio import Tasks


async def test_a_task_is_held_while_it_runs_and_let_go_when_it_ends() -> None:
    tasks, release = Tasks(), asyncio.Event()
    task = tasks.spawn(_until(release))
    assert len(tasks) == 1
    release.set()
    await task  # its callback letting it go was added first: it has run
    assert len(tasks) == 0


async def test_cancel_ends_every_running_task_and_waits_for_them() -> None:
    tasks, ended = Tasks(), []
    started = [asyncio.Event(), asyncio.Event()]
    for name, start in zip(("a", "b"), started, strict=True):
        tasks.spawn(_forever(name, start, ended))
    for start in started:
        await start.wait()
    await tasks.cancel()
    assert sorted(ended) == ["a", "b"]


async def test_wait_lets_tasks_finish_and_keeps_their_failures_theirs() -> None:
    tasks, release, finished = Tasks(), asyncio.Event(), []
    tasks.spawn(_until(release, finished))
    failing = tasks.spawn(_fail())
    release.set()
    await tasks.wait()
    assert finished == [True]
    assert isinstance(failing.exception(), RuntimeError)


async def _until(event: asyncio.Event, finished: list[bool] | None = None) -> None:
    await event.wait()
    if finished is not None:
        finished.append(True)


async def _forever(name: str, started: asyncio.Event, ended: list[str]) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    finally:
        ended.append(name)


async def _fail() -> None:
    raise RuntimeError("its own")
