"""Leg memory in a real Redis: what one relay wrote comes back as written, per relay;
the latest writer wins when no relay is named; a relay's forget leaves another's;
keys of one call share its hash slot; the TTL is set; malformed input is refused;
the relay's writer writes a call as it is and forgets it on release."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from quietwire.relay.legs import LegSpec, Side
from quietwire.relay.memory import LegMemoryWriter
from quietwire.relay.ports import PortPool
from quietwire.relay.sessions import Relay
from quietwire.rpc.relay.v1 import relay_pb2 as pb
from quietwire.runtime.errorlog import ErrorLog
from quietwire.runtime.legmemory import (
    LEG_MEMORY_TTL,
    LegMemory,
    LegSide,
    carried,
    forget,
    from_carried,
    leg_memory_key,
    recall,
    refresh,
    remember,
)
from quietwire.runtime.streams import stream_id
from redis.crc import key_slot

from tests.conftest import free_port

CALL = "a84b4c76e66710@pc33.example.com"
STREAM = stream_id(CALL, 0)
CALLER = LegMemory(
    ("198.51.100.7", 4000),
    ("198.51.100.7", 4001),
    (0xCA11, 0xBEEF),
    "ab" * 32,
    ("Hello", "Commit", "Conf2ACK"),
)
CALLEE = LegMemory(("203.0.113.9", 6000), None, (7,), "", ("Hello",))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_what_a_relay_wrote_comes_back(client: redis.Redis) -> None:
    assert await recall(client, STREAM) == {}
    await remember(client, STREAM, "relay-a", {LegSide.CALLER: CALLER, LegSide.CALLEE: CALLEE})
    assert await recall(client, STREAM) == {LegSide.CALLER: CALLER, LegSide.CALLEE: CALLEE}
    assert await recall(client, STREAM, "relay-a") == await recall(client, STREAM)
    assert await recall(client, STREAM, "relay-b") == {}
    assert await recall(client, stream_id(CALL, 1)) == {}
    assert 0 < await client.ttl(leg_memory_key(STREAM)) <= LEG_MEMORY_TTL


async def test_the_latest_writer_is_recalled_and_forget_is_per_relay(client: redis.Redis) -> None:
    """A call moved from relay A to relay B: B's memory is the one recalled; A's
    Release leaves B's; B's Release leaves nothing."""
    await remember(client, STREAM, "relay-a", {LegSide.CALLER: CALLER})
    moved = CALLER.merged(LegMemory(ssrcs=(0xF00D,)))
    await remember(client, STREAM, "relay-b", {LegSide.CALLER: moved})
    assert await recall(client, STREAM) == {LegSide.CALLER: moved}
    assert await recall(client, STREAM, "relay-a") == {LegSide.CALLER: CALLER}
    await forget(client, STREAM, "relay-a")
    assert await recall(client, STREAM, "relay-a") == {}
    assert await recall(client, STREAM) == {LegSide.CALLER: moved}
    await forget(client, STREAM, "relay-b")
    assert not await client.exists(leg_memory_key(STREAM))


async def test_an_empty_memory_clears_its_leg_and_refresh_renews(client: redis.Redis) -> None:
    await remember(client, STREAM, "relay-a", {LegSide.CALLER: CALLER, LegSide.CALLEE: CALLEE})
    await remember(client, STREAM, "relay-a", {LegSide.CALLER: LegMemory()})
    assert await recall(client, STREAM) == {LegSide.CALLEE: CALLEE}
    await client.expire(leg_memory_key(STREAM), 5)
    await refresh(client, [STREAM, stream_id(CALL, 9)])
    assert await client.ttl(leg_memory_key(STREAM)) > 5
    assert not await client.exists(leg_memory_key(stream_id(CALL, 9)))


def test_a_call_s_memories_share_its_hash_slot() -> None:
    """Redis Cluster: redis-py's own slot function puts them with the call record."""
    slots = {key_slot(leg_memory_key(stream_id(CALL, n)).encode()) for n in range(3)}
    assert slots == {key_slot(f"qw:call:v2:{{{CALL}}}".encode())}
    assert key_slot(leg_memory_key(stream_id("other-call", 0)).encode()) not in slots


async def test_a_malformed_record_is_unknown(client: redis.Redis) -> None:
    await client.hset(leg_memory_key(STREAM), mapping={"relay-a:1": b"\xff", "relay-a:at": "1"})
    assert await recall(client, STREAM) == {}


def test_carried_round_trip_and_refusals() -> None:
    for memory in (CALLER, CALLEE, LegMemory()):
        assert from_carried(carried(memory)) == memory
    bad = [
        pb.CarriedLeg(rtp_source=pb.Address(host="phone.example.com", port=4000)),
        pb.CarriedLeg(rtp_source=pb.Address(host="198.51.100.7", port=0)),
        pb.CarriedLeg(ssrcs=range(9)),
        pb.CarriedLeg(zrtp_hello_hash="not hex"),
        pb.CarriedLeg(zrtp_messages_seen=["Hello", "Bogus"]),
    ]
    for message in bad:
        with pytest.raises(ValueError, match="carried"):
            from_carried(message)


def test_merged_keeps_both_capped() -> None:
    newer = LegMemory(("192.0.2.1", 5000), None, (1, 2, 3, 4), "", ("Hello", "GoClear"))
    merged = CALLER.merged(newer)
    assert merged.rtp_source == ("192.0.2.1", 5000)
    assert merged.rtcp_source == CALLER.rtcp_source
    assert merged.ssrcs == (0xCA11, 0xBEEF, 1, 2)
    assert merged.zrtp_hello_hash == CALLER.zrtp_hello_hash
    assert merged.zrtp_messages_seen == ("Hello", "Commit", "Conf2ACK", "GoClear")


async def test_the_relay_writer_writes_as_the_call_is_and_forgets_what_it_wrote(
    client: redis.Redis,
) -> None:
    """A relay engine and its writer on a real Redis: a carried allocation is written
    under the relay's id, a release forgets it; a call released before its first
    write leaves nothing."""
    first = 2 * (free_port() // 2)
    engine = Relay(PortPool("127.0.0.1", first, first + 7), lambda _: None)
    writer = LegMemoryWriter(client, "relay-w", engine.calls, ErrorLog(logging.getLogger()))
    engine.memory = writer
    try:
        await engine.allocate(STREAM, [LegSpec(Side.CALLER, True, carried=CALLER)])
        await writer.write_round()
        assert await recall(client, STREAM, "relay-w") == {LegSide.CALLER: CALLER}
        engine.release(STREAM)
        await writer.write_round()
        assert not await client.exists(leg_memory_key(STREAM))

        other = stream_id(CALL, 1)
        await engine.allocate(other, [LegSpec(Side.CALLEE, True, carried=CALLEE)])
        engine.release(other)
        assert writer.pending == 0
    finally:
        await engine.close()
