"""A call moved between two real relay processes (issue 15), through a real Redis:
relay A writes what it learnt of the phones; relay B, allocated with those carried
legs, takes the phones' ongoing SRTP without a new ZRTP Hello, and refuses a
stranger on another port, a packet from the phone's address with another SSRC,
and the phone's SSRC from elsewhere. Release forgets each relay's memory; a relay
that dies or stops leaves it; Redis hung does not stop forwarding."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from quietwire.protocols.rtp.packets import Rtp
from quietwire.rpc.relay.v1 import relay_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2_grpc
from quietwire.runtime.legmemory import (
    LEG_MEMORY_TTL,
    LegMemory,
    LegSide,
    carried,
    leg_memory_key,
    recall,
)
from quietwire.runtime.streams import stream_id

from tests.conftest import RedisServer, start_redis, stop_redis
from tests.integration.test_relay_sessions import HELLO, HELLO_HASH
from tests.security.test_relay_attacks import CALLEE, CALLER, Phone, introduce, latched, legs
from tests.support.relay import relay_process
from tests.support.wait import eventually

Stub = relay_pb2_grpc.RelayStub
SSRC = {CALLER: 0xCA11E4, CALLEE: 0xCA11EE}
HELLO_HEX = HELLO_HASH.split()[1]


def srtp(ssrc: int, sequence: int) -> bytes:
    """An SRTP packet as the relay sees it: a clear RTP header, then what it cannot
    read (RFC 3711 section 3.1: encrypted payload and authentication tag)."""
    return Rtp(0, sequence, 160 * sequence, ssrc, os.urandom(170)).serialize()


@pytest.fixture(scope="module")
def relays(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Relays "relay-a" and "relay-b" on one Redis, loopback phones allowed."""
    logs = tmp_path_factory.mktemp("relays")
    with (
        relay_process(
            redis_server.url,
            logs / "a.log",
            QW_RELAY_ID="relay-a",
            QW_RELAY_PEER_ALLOW="127.0.0.0/8",
        ) as a,
        relay_process(
            redis_server.url,
            logs / "b.log",
            QW_RELAY_ID="relay-b",
            QW_RELAY_PEER_ALLOW="127.0.0.0/8",
        ) as b,
    ):
        yield {"relay-a": a.address, "relay-b": b.address}


@pytest.fixture
async def stubs(relays: dict[str, str]) -> AsyncIterator[dict[str, Stub]]:
    async with (
        grpc.aio.insecure_channel(relays["relay-a"]) as a,
        grpc.aio.insecure_channel(relays["relay-b"]) as b,
    ):
        yield {"relay-a": relay_pb2_grpc.RelayStub(a), "relay-b": relay_pb2_grpc.RelayStub(b)}


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def exchange(
    caller: Phone, callee: Phone, port: dict[int, int], first: int, count: int
) -> None:
    """SRTP both ways through a relay's ports, each packet arriving as sent."""
    for n in range(first, first + count):
        for phone, side, other in ((caller, CALLER, callee), (callee, CALLEE, caller)):
            packet = srtp(SSRC[side], n)
            phone.send(packet, port[side])
            assert await other.receive() == packet


async def established_on_a(
    stub: Stub, call_id: str, caller: Phone, callee: Phone
) -> dict[int, int]:
    """A ZRTP call on relay A as keyagreement sets it up; its media flowing."""
    spec = [
        pb.LegSpec(side=CALLER, rtcp_mux=True, zrtp_hash=HELLO_HASH),
        pb.LegSpec(side=CALLEE, rtcp_mux=True),
    ]
    allocated = await stub.Allocate(pb.AllocateRequest(call_id=call_id, legs=spec))
    port = {leg.side: leg.rtp.port for leg in allocated.legs}
    for side, phone in ((CALLER, caller), (CALLEE, callee)):
        await stub.Update(pb.UpdateRequest(call_id=call_id, side=side, remote_rtp=phone.address))
    await introduce(stub, call_id, CALLEE, callee, port[CALLEE])
    caller.send(HELLO, port[CALLER])
    assert await callee.receive() == HELLO
    await exchange(caller, callee, port, 1, 5)
    return port


def address(phone: Phone) -> tuple[str, int]:
    return phone.address.host, phone.address.port


async def test_a_moved_call_keeps_its_media_and_refuses_strangers(
    stubs: dict[str, Stub], client: redis.Redis
) -> None:
    call_id = stream_id("moved-call@example.com", 0)
    caller, callee, stranger = Phone(), Phone(), Phone()
    a, b = stubs["relay-a"], stubs["relay-b"]
    await established_on_a(a, call_id, caller, callee)

    async def remembered_on_a() -> dict[LegSide, LegMemory] | None:
        memory = await recall(client, call_id, "relay-a")
        done = all(memory.get(LegSide(side)) and memory[LegSide(side)].ssrcs for side in SSRC)
        return memory if done else None

    memory = await eventually(remembered_on_a, 10, "relay A's leg memory in Redis", 0.05)
    assert memory[LegSide.CALLER] == LegMemory(
        address(caller), None, (SSRC[CALLER],), HELLO_HEX, ("Hello",)
    )
    assert memory[LegSide.CALLEE] == LegMemory(address(callee), None, (SSRC[CALLEE],))

    # keyagreement moves the call: B allocated with what A knew.
    spec = [
        pb.LegSpec(side=side, rtcp_mux=True, carried=carried(memory[LegSide(side)]))
        for side in (CALLER, CALLEE)
    ]
    spec[0].zrtp_hash = HELLO_HASH
    allocated = await b.Allocate(pb.AllocateRequest(call_id=call_id, legs=spec))
    port = {leg.side: leg.rtp.port for leg in allocated.legs}
    assert (
        await eventually(
            lambda: recall(client, call_id, "relay-b"), 10, "relay B's memory, as carried", 0.05
        )
        == memory
    )

    # The phones were re-INVITEd: the callee sends to B first.
    callee.send(srtp(SSRC[CALLEE], 6), port[CALLEE])
    await latched(b, call_id, CALLEE)
    stranger.send(srtp(SSRC[CALLER], 6), port[CALLER])  # the caller's SSRC, another port
    caller.send(srtp(0xBAD, 6), port[CALLER])  # the caller's address, another SSRC
    assert await callee.nothing_for(0.3)
    stats = await legs(b, call_id)
    assert not stats[CALLER].latched and stats[CALLER].packets_dropped == 2

    await exchange(caller, callee, port, 7, 20)
    stranger.send(srtp(SSRC[CALLER], 30), port[CALLER])
    stranger.send(srtp(SSRC[CALLEE], 30), port[CALLEE])
    assert await callee.nothing_for(0.2) and await caller.nothing_for(0.2)
    stats = await legs(b, call_id)
    assert stats[CALLER].packets_dropped == 3 and stats[CALLEE].packets_dropped == 1
    assert list(stats[CALLER].zrtp_messages_seen) == []  # no new Hello on B

    async def latched_on_b() -> bool:
        now = (await recall(client, call_id, "relay-b")).get(LegSide.CALLER)
        return now is not None and now.rtp_source == address(caller)

    await eventually(latched_on_b, 10, "relay B's memory after its latch", 0.05)
    assert (await recall(client, call_id))[LegSide.CALLER].ssrcs == (SSRC[CALLER],)

    # The caller's phone restarts its stream (a new SSRC) on the settled path.
    for n in range(31, 36):
        caller.send(packet := srtp(0x5EC0D, n), port[CALLER])
        assert await callee.receive() == packet

    async def new_ssrc_remembered() -> bool:
        now = (await recall(client, call_id, "relay-b")).get(LegSide.CALLER)
        return now is not None and now.ssrcs == (SSRC[CALLER], 0x5EC0D)

    await eventually(new_ssrc_remembered, 10, "the new SSRC in relay B's memory", 0.05)

    # The move is done: A releases, B's memory stays until B releases.
    await a.Release(pb.ReleaseRequest(call_id=call_id))
    await eventually(
        lambda: _forgotten(client, call_id, "relay-a"), 10, "relay A's memory forgotten", 0.05
    )
    assert (await recall(client, call_id))[LegSide.CALLER].rtp_source == address(caller)
    await b.Release(pb.ReleaseRequest(call_id=call_id))
    await eventually(
        lambda: _forgotten(client, call_id, "relay-b"), 10, "relay B's memory forgotten", 0.05
    )
    assert not await client.exists(leg_memory_key(call_id))


async def _forgotten(client: redis.Redis, call_id: str, relay_id: str) -> bool:
    return await recall(client, call_id, relay_id) == {}


async def test_a_carried_leg_that_is_no_address_is_refused(stubs: dict[str, Stub]) -> None:
    """Allocate names what is wrong, and holds no ports for it."""
    bad = pb.CarriedLeg(rtp_source=pb.Address(host="phone.example.com", port=4000), ssrcs=[1])
    spec = [pb.LegSpec(side=CALLER, carried=bad), pb.LegSpec(side=CALLEE)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs["relay-b"].Allocate(pb.AllocateRequest(call_id="bad-carried#0", legs=spec))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "IP literal" in (raised.value.details() or "")
    listed = await stubs["relay-b"].ListSessions(pb.ListSessionsRequest())
    assert "bad-carried#0" not in [session.call_id for session in listed.sessions]


async def test_redis_hung_does_not_stop_forwarding(tmp_path: Path) -> None:
    """Redis stopped (SIGSTOP: every command hangs until the client's timeout) while
    a call latches and carries media: forwarding goes on; once Redis answers again
    the relay writes what it learnt meanwhile."""
    server = start_redis(tmp_path)
    with relay_process(
        server.url, tmp_path / "relay.log", QW_RELAY_ID="relay-h", QW_RELAY_PEER_ALLOW="127.0.0.0/8"
    ) as relay:
        client = redis.from_url(server.url)
        try:
            async with grpc.aio.insecure_channel(relay.address) as channel:
                stub = relay_pb2_grpc.RelayStub(channel)
                caller, callee = Phone(), Phone()
                server.process.send_signal(signal.SIGSTOP)
                try:
                    port = await established_on_a(stub, "hung#0", caller, callee)
                    await exchange(caller, callee, port, 10, 50)
                finally:
                    server.process.send_signal(signal.SIGCONT)

                async def written() -> bool:
                    memory = await recall(client, "hung#0", "relay-h")
                    return memory.get(LegSide.CALLER, LegMemory()).ssrcs == (SSRC[CALLER],)

                await eventually(written, 20, "the memory written once Redis answers", 0.1)
                await stub.Release(pb.ReleaseRequest(call_id="hung#0"))
        finally:
            await client.aclose()
            await asyncio.to_thread(stop_redis, server)


async def test_a_relay_that_dies_or_stops_leaves_its_memory(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL (a crash) or SIGTERM (a stop with calls still on it): the memory of
    its calls stays for LEG_MEMORY_TTL, for keyagreement to move them."""
    for how in (signal.SIGKILL, signal.SIGTERM):
        call_id = f"left-by-{how.name}#0"
        with relay_process(
            redis_server.url,
            tmp_path / f"{how.name}.log",
            QW_RELAY_ID="relay-gone",
            QW_RELAY_PEER_ALLOW="127.0.0.0/8",
        ) as relay:
            async with grpc.aio.insecure_channel(relay.address) as channel:
                stub = relay_pb2_grpc.RelayStub(channel)
                await established_on_a(stub, call_id, Phone(), Phone())

                async def remembered(call_id: str = call_id) -> bool:
                    memory = await recall(client, call_id, "relay-gone")
                    return all(memory.get(LegSide(side), LegMemory()).ssrcs for side in SSRC)

                await eventually(remembered, 10, "the relay's memory in Redis", 0.05)
            relay.process.send_signal(how)
            await asyncio.to_thread(relay.process.wait, 15)
        memory = await recall(client, call_id)
        assert memory[LegSide.CALLER].zrtp_messages_seen == ("Hello",)
        assert memory[LegSide.CALLEE].ssrcs == (SSRC[CALLEE],)
        assert 0 < await client.ttl(leg_memory_key(call_id)) <= LEG_MEMORY_TTL
