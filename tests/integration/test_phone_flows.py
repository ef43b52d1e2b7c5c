"""Our phone's flow to the registrar fails and comes back (RFC 5626), and both
ends hanging up at once (BYE glare) end cleanly on both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from quietwire.embedded.pki import Pki
from quietwire.phone.call import CallResult, Phone

from tests.integration.signaling_harness import DOMAIN, Replica, add_users, replica
from tests.integration.test_phone import options


class Said:
    """What the phones printed, and a wait until it shows something."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Condition()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[list[str]], bool], timeout: float = 30) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.lines)), timeout)

    async def seen(self, prefix: str, times: int = 1) -> None:
        await self.until(lambda lines: sum(line.startswith(prefix) for line in lines) >= times)


def presses_h_after(event: asyncio.Event | asyncio.Barrier) -> AsyncIterator[str]:
    """A user who presses ``h`` once ``event`` is set (or the barrier passed)."""

    async def keys() -> AsyncIterator[str]:
        await event.wait()
        yield "h"

    return keys()


def call(alice: Phone, bob: Phone) -> tuple[asyncio.Task[CallResult], asyncio.Task[CallResult]]:
    answering = asyncio.create_task(bob.answer(timeout=10))
    calling = asyncio.create_task(alice.call(f"sip:bob@{DOMAIN}"))
    return calling, answering


async def test_both_hang_up_at_once_and_each_answers_the_other(
    pki: Pki, one: Replica, tmp_path: Path
) -> None:
    both_secure = asyncio.Barrier(2)
    said = Said()
    alice = Phone(
        options(
            pki, one.port, "alice", tmp_path, 440, keys=presses_h_after(both_secure), duration=30.0
        ),
        said,
    )
    bob = Phone(
        options(
            pki, one.port, "bob", tmp_path, 880, keys=presses_h_after(both_secure), duration=30.0
        ),
        said,
    )
    await alice.start()
    await bob.start()
    try:
        calling, answering = call(alice, bob)
        caller, callee = await calling, await answering
    finally:
        await alice.close()
        await bob.close()
    assert caller.secured is not None and callee.secured is not None
    # Both pressed h in the same loop turn: two BYEs crossed. Each side answered
    # the other's: 200 while its own was pending, or 481 once its call had ended
    # (the proxy challenges a BYE whose dialog the other's BYE took, so it can
    # arrive after that one was answered), so both were answered.
    assert not [line for line in said.lines if line.startswith("BYE not answered")], said.lines
    answered = [line for line in said.lines if line.startswith("BYE answered")]
    assert len(answered) + [caller.ended_by_peer, callee.ended_by_peer].count(True) >= 2


async def test_phones_recover_their_flows_after_a_signaling_restart(
    pki: Pki, redis_url: str, tmp_path: Path
) -> None:
    """The replica the phones registered with goes away mid-call and another takes
    its port: the phones notice, reconnect, register again, and the caller's
    BYE still reaches the callee."""
    await add_users(redis_url)
    hang_up = asyncio.Event()
    said = Said()
    phones: list[Phone] = []
    try:
        async with replica(pki, redis_url) as first:
            port = first.port
            alice = Phone(
                options(
                    pki, port, "alice", tmp_path, 440, keys=presses_h_after(hang_up), duration=60.0
                ),
                said,
            )
            bob = Phone(options(pki, port, "bob", tmp_path, 880, duration=60.0), said)
            phones += [alice, bob]
            await alice.start()
            await bob.start()
            calling, answering = call(alice, bob)
            await said.seen("secure ", 2)
        await said.seen("flow lost: reconnecting", 2)
        async with replica(pki, redis_url, sip_port=port):
            await said.seen("registered sip:alice@127.0.0.1 (flow recovered)")
            await said.seen("registered sip:bob@127.0.0.1 (flow recovered)")
            hang_up.set()
            caller, callee = await calling, await answering
    finally:
        for phone in phones:
            await phone.close()
    assert caller.secured is not None and callee.secured is not None
    assert "BYE answered 200" in said.lines, said.lines
    assert callee.ended_by_peer
