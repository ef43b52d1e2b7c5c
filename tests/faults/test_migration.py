"""Calls move between relays (issue 15), through real processes and two relays.

Our phone calls our phone (ZRTP, SRTP); the call is moved by an operator
(``quietwire calls migrate``), by its relay's drain (``quietwire drain-relay
--migrate``) and by its relay's SIGKILL. Each time both phones are re-INVITEd
toward the other relay, keep their ZRTP session (one SAS, no new handshake, no
SRTP packet refused) and keep sending and receiving through the new relay; the
call's record names it (``quietwire calls``). A phone that refuses the move
(488) after its relay died gets the call ended with a Reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from quietwire.phone.call import CallResult, Phone
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request, Response
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel

from tests.conftest import run_quietwire
from tests.faults.cluster import Cluster, cluster_files, established
from tests.integration.test_phone import options
from tests.integration.test_phone_flows import Said, call, presses_h_after
from tests.interop.test_relay_calls import sdp
from tests.support.relay import relay_session
from tests.support.wait import eventually

#: Seconds for a phone step (registering, ZRTP) and for a move to show.
STEP = 30
#: Packets each leg must bring to the new relay to count as media flowing there
#: (20 ms frames: a second of audio is 50).
FLOWING = 50
#: The UDP ranges of the two relays (their own, as two nodes would have).
RANGES = {"relay": ("30000", "34999"), "relay-2": ("35000", "39999")}


@pytest.fixture
async def two_relays(tmp_path: Path) -> AsyncIterator[Cluster]:
    """keyagreement, relay and relay-2 (each its own UDP range) and signaling."""
    with cluster_files(tmp_path, relays=2) as cluster:
        yield await start_two_relays(cluster)


async def start_two_relays(cluster: Cluster, fixed_ids: bool = False) -> Cluster:
    """Every service started, each relay on its own UDP range (and, ``fixed_ids``,
    registered under its name, as a pod is), and the users added."""
    for name in cluster.names:
        await cluster.start(name, **relay_settings(name, fixed_ids))
    cluster.add_users()
    return cluster


def relay_settings(name: str, fixed_id: bool) -> dict[str, str]:
    if name not in RANGES:
        return {}
    low, high = RANGES[name]
    named = {"QW_RELAY_ID": name} if fixed_id else {}
    return {"QW_RELAY_PORT_MIN": low, "QW_RELAY_PORT_MAX": high, **named}


async def relay_id(cluster: Cluster, name: str) -> str:
    async with open_channel(cluster.address(name), cluster.grpc_tls) as channel:
        listed = await relay_pb2_grpc.RelayStub(channel).ListSessions(
            relay_pb2.ListSessionsRequest(), timeout=5
        )
    return listed.relay_id


def listed_relay(listing: str, call_id: str) -> str:
    """The relay `quietwire calls` names for ``call_id`` (its ``relay=`` field)."""
    line = next(line for line in listing.splitlines() if line.startswith(f"{call_id} "))
    return line.rsplit(" relay=", 1)[1]


async def carrier(cluster: Cluster, call_id: str) -> str:
    """The relay (its name in the cluster) holding ``call_id``'s session now."""
    for name in cluster.relay_names:
        if name in cluster.processes and f"{call_id}#0" in await cluster.relay_sessions(name):
            return name
    raise AssertionError(f"no relay holds {call_id}")


async def legs_in(cluster: Cluster, name: str, call_id: str) -> list[int]:
    """Packets relay ``name`` received on each leg of the call's audio (0s: none there)."""
    async with open_channel(cluster.address(name), cluster.grpc_tls) as channel:
        reply = await relay_session(relay_pb2_grpc.RelayStub(channel), call_id)
    return sorted(leg.packets_in for leg in reply.legs) if reply is not None else [0, 0]


async def flowing_through(cluster: Cluster, name: str, call_id: str, within: float) -> float:
    """Wait until both legs of the call bring media to relay ``name``; the time
    (monotonic) at which both had started."""
    first: float | None = None

    async def both() -> bool:
        nonlocal first
        counts = await legs_in(cluster, name, call_id)
        if first is None and min(counts) > 0:
            first = time.monotonic()
        return min(counts) >= FLOWING

    await eventually(both, within, f"media of {call_id} flowing through {name}", interval=0.05)
    assert first is not None
    return first


@dataclass
class SecureCall:
    """Alice calling Bob, both our phones, the call secured."""

    call_id: str
    said: Said
    hang_up: asyncio.Event
    calling: asyncio.Task[CallResult]
    answering: asyncio.Task[CallResult]
    #: The relay carrying it (media flowing through it), and the other one.
    source: str = ""
    target: str = ""

    async def end(self) -> tuple[CallResult, CallResult]:
        """Alice hangs up; both results, each still the one secure session."""
        self.hang_up.set()
        caller, callee = await self.calling, await self.answering
        assert caller.secured is not None and callee.secured is not None
        assert caller.secured.sas == callee.secured.sas
        assert caller.stats["rejected"] == 0 and callee.stats["rejected"] == 0, (
            "SRTP refused after the move: the keys changed"
        )
        assert callee.ended_by_peer and "BYE answered 200" in self.said.lines, self.said.lines
        return caller, callee


@asynccontextmanager
async def secure_call(cluster: Cluster, tmp_path: Path) -> AsyncIterator[SecureCall]:
    said = Said()
    hang_up = asyncio.Event()
    port = cluster.sip_port
    keys = presses_h_after(hang_up)
    alice = Phone(
        options(cluster.pki, port, "alice", tmp_path, 440, keys=keys, duration=120.0), said
    )
    bob = Phone(options(cluster.pki, port, "bob", tmp_path, 880, duration=120.0), said)
    await alice.start()
    await bob.start()
    try:
        calling, answering = call(alice, bob)
        await said.until(lambda lines: sum(x.startswith("secure ") for x in lines) >= 2, STEP)
        listed = await cluster.calls()
        call_id = next(line.split()[0] for line in listed.splitlines() if "zrtp-verified" in line)
        source = await carrier(cluster, call_id)
        target = next(n for n in cluster.relay_names if n != source)
        await flowing_through(cluster, source, call_id, STEP)
        yield SecureCall(call_id, said, hang_up, calling, answering, source, target)
    finally:
        hang_up.set()
        await alice.close()
        await bob.close()


def one_handshake(said: Said) -> None:
    """Each phone secured its call once: the move made no new ZRTP handshake."""
    assert sum(line.startswith("secure ") for line in said.lines) == 2, said.lines
    assert len({line for line in said.lines if line.startswith("SAS ")}) == 1, said.lines


async def test_an_operator_moves_a_call_and_its_media_follows(
    two_relays: Cluster, tmp_path: Path
) -> None:
    cluster = two_relays
    async with secure_call(cluster, tmp_path) as secure:
        source, target = secure.source, secure.target
        target_id = await relay_id(cluster, target)

        moved = await asyncio.to_thread(
            cluster.quietwire, "calls", "migrate", secure.call_id, "--to", target_id
        )
        assert moved.returncode == 0, moved.stderr
        assert moved.stdout.strip().endswith(f"to {target_id}"), moved.stdout

        await flowing_through(cluster, target, secure.call_id, STEP)
        assert await cluster.relay_sessions(source) == []  # released on the old relay
        listed = await cluster.calls()
        assert f"{secure.call_id} zrtp zrtp-verified" in listed
        assert listed_relay(listed, secure.call_id) == target_id

        # Asked to move it where it is, or a call that does not exist: nothing moves.
        again = await asyncio.to_thread(
            cluster.quietwire, "calls", "migrate", secure.call_id, "--to", target_id
        )
        assert again.returncode == 1
        assert f"relay {target_id} is not available): still on {target_id}" in again.stderr
        unknown = await asyncio.to_thread(cluster.quietwire, "calls", "migrate", "no-such-call")
        assert (unknown.returncode, unknown.stderr.strip()) == (
            1,
            "quietwire calls migrate: keyagreement: no such call",
        )
        await flowing_through(cluster, target, secure.call_id, STEP)
        await secure.end()
    one_handshake(secure.said)


async def test_a_call_survives_the_sigkill_of_its_relay(
    two_relays: Cluster, tmp_path: Path
) -> None:
    cluster = two_relays
    async with secure_call(cluster, tmp_path) as secure:
        source, target = secure.source, secure.target

        killed = time.monotonic()
        cluster.kill(source)
        back = await flowing_through(cluster, target, secure.call_id, STEP)
        gap = back - killed
        print(f"media back {gap:.2f} s after the SIGKILL of its relay")
        assert gap < 5, f"the move took {gap:.2f} s"
        listed = await cluster.calls()
        assert listed_relay(listed, secure.call_id) == await relay_id(cluster, target)
        await secure.end()
    one_handshake(secure.said)


async def test_drain_relay_migrate_moves_its_calls_and_finishes_in_seconds(
    two_relays: Cluster, tmp_path: Path
) -> None:
    cluster = two_relays
    async with secure_call(cluster, tmp_path) as secure:
        source, target = secure.source, secure.target

        env = cluster.env(QW_GRPC_PORT=str(cluster.grpc_ports[source]))
        started = time.monotonic()
        drained = await asyncio.to_thread(
            run_quietwire, "drain-relay", "--migrate", "--timeout", "30", env=env
        )
        took = time.monotonic() - started
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "migrated: 1 moved, 0 ended, 0 not moved" in drained.stdout, drained.stdout
        assert took < 15, f"drained in {took:.1f} s"
        await flowing_through(cluster, target, secure.call_id, STEP)
        await secure.end()
    one_handshake(secure.said)


async def test_a_phone_refusing_the_move_off_a_dead_relay_gets_a_reason(
    two_relays: Cluster,
) -> None:
    """Raw user agents: after the relay's SIGKILL both are re-INVITEd; Bob answers
    488, so the call cannot go on: both get a BYE whose Reason says the relay
    was lost and why the call could not move, and the other relay holds nothing of it."""
    cluster = two_relays
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        assert (await alice.register()).status == 200
        invite, _ = await established(alice, bob)
        source = await carrier(cluster, invite.call_id)
        target = next(n for n in cluster.relay_names if n != source)
        cluster.kill(source)

        async def moved_then_hung_up(ua: UserAgent, reply: Callable[[Request], Response]) -> str:
            """Answer the re-INVITE with ``reply``; the Reason of the BYE that follows."""
            while True:
                request = await asyncio.wait_for(ua.requests.get(), STEP)
                if request.call_id != invite.call_id:
                    continue
                if request.method == "INVITE":
                    await ua.connection.send(reply(request))
                elif request.method == "BYE":
                    await ua.connection.send(ua.answer(request, 200, "OK"))
                    return request.headers.get("Reason") or ""

        def accept(request: Request) -> Response:
            return alice.answer(request, 200, "OK", body=sdp("alice", 40000, True))

        def refuse(request: Request) -> Response:
            return bob.answer(request, 488, "Not Acceptable Here")

        reasons = await asyncio.gather(
            moved_then_hung_up(alice, accept), moved_then_hung_up(bob, refuse)
        )
        for reason in reasons:
            assert reason.startswith('SIP;cause=200;text="relay '), reason
            assert "488" in reason, reason

        async def gone() -> bool:
            return invite.call_id not in await cluster.calls()

        await eventually(gone, STEP, "the ended call gone from `quietwire calls`")
        assert await cluster.relay_sessions(target) == []  # its sessions there released
    finally:
        await alice.close()
        await bob.close()


async def test_a_relay_restarted_while_keyagreement_was_away_has_its_calls_moved(
    tmp_path: Path,
) -> None:
    """keyagreement down; the call's relay killed and back at once under its own id
    (a container restart), empty. On its return keyagreement reconciles: the call's
    relay holds none of its sessions and started after it, so the call moves to
    the other relay (not ended) and its media flows there."""
    with cluster_files(tmp_path / "cluster", relays=2) as files:
        cluster = await start_two_relays(files, fixed_ids=True)
        async with secure_call(cluster, tmp_path) as secure:
            cluster.kill("keyagreement")
            await cluster.restart(secure.source, **relay_settings(secure.source, fixed_id=True))
            await cluster.start("keyagreement")
            await flowing_through(cluster, secure.target, secure.call_id, STEP)
            assert listed_relay(await cluster.calls(), secure.call_id) == secure.target
            await secure.end()
        one_handshake(secure.said)
