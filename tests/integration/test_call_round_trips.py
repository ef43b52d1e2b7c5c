"""The Redis round trips of a proxied call, counted on a private Redis by MONITOR:
INVITE with digest (407, INVITE), 200, ACK, BYE, 200 take three: the digest
check with the callee's bindings (the caller registered: the replica remembers
her HA1), the dialog recorded at the 200, and the BYE's check-and-take. The
caller's ACK is routed from the replica's copy of the dialog.

Each phase is closed by an ECHO the test sends once the phase is over at the
phones: MONITOR reports commands in the order Redis ran them, so everything the
replica sent for the phase comes before it. A call made first loads every
script (its EVALSHAs answered NOSCRIPT, then SCRIPT LOAD): only a second one is
counted. The replica's heartbeat (``qw:replica``) is no call's."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request
from redis.asyncio.client import Monitor

from tests.integration.signaling_harness import DOMAIN, Replica, next_request
from tests.integration.test_signaling import bob_hangs_up, call, registered

MARKERS = itertools.count()


class Commands:
    """What the replica sends Redis, phase by phase (not what Lua runs inside a script)."""

    def __init__(self, monitor: Monitor, client: redis.Redis) -> None:
        self.monitor, self.client = monitor, client

    async def phase(self) -> list[str]:
        """The commands since the last phase, once Redis ran them all."""
        marker = f"qw-test-phase-{next(MARKERS)}"
        await self.client.echo(marker)
        commands = []
        while True:
            entry = await asyncio.wait_for(self.monitor.next_command(), 10)
            command = str(entry["command"])
            if command == f"ECHO {marker}":
                return commands
            if entry["client_type"] == "lua" or "qw:replica" in command:
                continue
            commands.append(command.split(" ", 1)[0])


@asynccontextmanager
async def commands_of(redis_url: str) -> AsyncIterator[Commands]:
    client = redis.from_url(redis_url)
    try:
        async with client.monitor() as monitor:
            commands = Commands(monitor, client)
            await commands.phase()  # MONITOR is on: from here, every command is seen
            yield commands
    finally:
        await client.aclose()


async def whole_call(alice: UserAgent, bob: UserAgent, commands: Commands) -> list[list[str]]:
    """alice calls bob (INVITE, 407, INVITE, 200, ACK), bob hangs up (BYE, 200):
    the commands of the set-up, the ACK and the BYE."""
    incoming, ok = await call(alice, bob)
    set_up = await commands.phase()
    invite = Request(ok.headers.copy(), b"", "INVITE", f"sip:bob@{DOMAIN}")
    dialog = alice.dialog_from_response(invite, ok)
    await alice.connection.send(alice.in_dialog(dialog, "ACK", cseq=ok.cseq.number))
    await next_request(bob, "ACK")
    ack = await commands.phase()
    await bob_hangs_up(alice, bob, incoming, ok)
    return [set_up, ack, await commands.phase()]


async def test_a_call_takes_three_round_trips(pki: Pki, one: Replica, redis_url: str) -> None:
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    async with commands_of(redis_url) as commands:
        await whole_call(alice, bob, commands)  # loads the scripts
        set_up, ack, bye = await whole_call(alice, bob, commands)
    # The digest check with the callee's bindings, the dialog recorded at the 200.
    assert set_up == ["EVALSHA"] * 2
    assert ack == []  # from the replica's copy of the dialog
    assert bye == ["EVALSHA"]  # checked and taken at once
    await alice.close()
    await bob.close()
