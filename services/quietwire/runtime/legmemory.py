"""Leg memory: what a relay knows of each leg's phone, kept in Redis while it is alive.

A call migrates between relays (issue 15) without a new ZRTP Hello from the
phones: the new relay is told, per leg, where the old one had latched the
phone (its source address per channel), the SSRCs it sent with (RTP headers
of SRTP are clear, RFC 3711 section 3.1) and the ZRTP it saw (the Hello's
SHA-256 and the message types, RFC 6189 section 5), and accepts the phone's
ongoing SRTP on that proof (``LegSpec.carried`` in relay.proto). The old relay
may be dead by then, so it writes what it knows as it learns it: on a latch, a
new SSRC, a new ZRTP message type; never per packet.

Written by relays (:mod:`quietwire.relay.memory`), read by keyagreement when
it moves a call; :func:`carried` and :func:`from_carried` convert at the
servicers. Moving stream ``i`` of a call to relay B::

    memory = await recall(redis, stream_id(call_id, i))  # the relay that wrote last
    legs = [
        relay_pb2.LegSpec(side=side, rtcp_mux=..., zrtp_hash=..., carried=carried(memory[side]))
        for side in memory
    ]

B then writes its own memory of the stream (at once, then as it learns), and
each relay's Release deletes only its own, so a failed move leaves A's intact
and a finished one leaves B's. "Wrote last" compares the relays' clocks
(Unix time): keep them synchronized (NTP), or name the relay.

The records hold the phones' addresses (what a relay needs to take a leg
over), so they live only as long as the relay holds the call: refreshed by it
every few seconds, deleted on Release, gone by TTL otherwise (a relay that
died or stopped with calls on it leaves them that long, for the move).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as redis
from google.protobuf.message import DecodeError
from redis.asyncio.client import Pipeline

from quietwire.protocols.zrtp.messages import MESSAGE_TYPES
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.redisclient import text
from quietwire.runtime.streams import SEPARATOR, parse_stream_id

#: Hash per relay session (stream id ``<Call-ID>#<index>``), the Call-ID as its
#: hash tag (one slot with the call's record). Fields, per relay that held the
#: stream: ``<relay-id>:<side>`` (side 1 caller, 2 callee) = a serialized
#: ``relay.v1.CarriedLeg``, and ``<relay-id>:at`` = when that relay last wrote
#: (Unix seconds). TTL: LEG_MEMORY_TTL, renewed by the relays holding the stream
#: every REFRESH_EVERY seconds; a relay's fields are deleted when it releases it.
LEG_MEMORY_KEY = "qw:legmem:{{{call_id}}}{rest}"
LEG_MEMORY_TTL = 60
#: Seconds between a relay's TTL renewals of the memories it holds.
REFRESH_EVERY = 15.0
#: SSRCs kept per leg: a phone sends one per stream (RFC 3550 section 8), a few
#: more after a restart; a stranger cannot grow a leg's set past this.
MAX_SSRCS = 4
AT = "at"

Address = tuple[str, int]
_T = TypeVar("_T")
_HELLO_HASH = re.compile(r"[0-9a-f]{64}")
#: The names of ZRTP message types (RFC 6189 section 5), as the relay reports them.
ZRTP_NAMES = frozenset(block.decode("ascii").strip() for block in MESSAGE_TYPES)


class LegSide(enum.IntEnum):
    """Which side of the call a leg faces; values as LegSide in relay.proto."""

    CALLER = 1
    CALLEE = 2

    @property
    def other(self) -> LegSide:
        return LegSide.CALLEE if self is LegSide.CALLER else LegSide.CALLER


@dataclass(frozen=True, slots=True)
class LegMemory:
    """What a relay knew of one leg's phone."""

    #: Where the phone's packets came from when the relay latched it, per channel
    #: (None: that channel never latched, e.g. RTCP multiplexed on RTP).
    rtp_source: Address | None = None
    rtcp_source: Address | None = None
    #: The SSRCs of the phone's RTP, in the order seen, at most MAX_SSRCS.
    ssrcs: tuple[int, ...] = ()
    #: Lowercase hex SHA-256 of the phone's ZRTP Hello message, if seen.
    zrtp_hello_hash: str = ""
    #: ZRTP message type names seen from the phone ("Hello", "Commit"…), in order.
    zrtp_messages_seen: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == EMPTY

    def merged(self, newer: LegMemory) -> LegMemory:
        """This (older, e.g. carried from the last relay) and ``newer`` together:
        the newer addresses and Hello hash where known, the SSRCs and messages of
        both (capped)."""
        return LegMemory(
            newer.rtp_source or self.rtp_source,
            newer.rtcp_source or self.rtcp_source,
            _first(MAX_SSRCS, (*self.ssrcs, *newer.ssrcs)),
            newer.zrtp_hello_hash or self.zrtp_hello_hash,
            _first(len(ZRTP_NAMES), (*self.zrtp_messages_seen, *newer.zrtp_messages_seen)),
        )


EMPTY = LegMemory()


def _first(limit: int, items: Iterable[_T]) -> tuple[_T, ...]:
    """The distinct ``items`` in order, at most ``limit``."""
    return tuple(dict.fromkeys(items))[:limit]


def _address(value: Address | None) -> relay_pb2.Address | None:
    return relay_pb2.Address(host=value[0], port=value[1]) if value is not None else None


def _from_address(value: relay_pb2.Address, name: str) -> Address | None:
    if not value.host and not value.port:
        return None
    try:
        ipaddress.ip_address(value.host)
    except ValueError:
        raise ValueError(f"carried {name} must be an IP literal") from None
    if not 0 < value.port < 65536:
        raise ValueError(f"carried {name} port out of range")
    return value.host, value.port


def carried(memory: LegMemory) -> relay_pb2.CarriedLeg:
    """The protobuf of ``memory``, for ``LegSpec.carried`` (and for Redis)."""
    return relay_pb2.CarriedLeg(
        rtp_source=_address(memory.rtp_source),
        rtcp_source=_address(memory.rtcp_source),
        ssrcs=memory.ssrcs,
        zrtp_hello_hash=memory.zrtp_hello_hash,
        zrtp_messages_seen=memory.zrtp_messages_seen,
    )


def from_carried(message: relay_pb2.CarriedLeg) -> LegMemory:
    """The memory a ``CarriedLeg`` describes; ValueError names what is malformed
    (a name instead of an IP literal, a bad port or hash, too many SSRCs, an
    unknown ZRTP message type)."""
    if len(message.ssrcs) > MAX_SSRCS:
        raise ValueError(f"at most {MAX_SSRCS} carried SSRCs")
    if message.zrtp_hello_hash and not _HELLO_HASH.fullmatch(message.zrtp_hello_hash):
        raise ValueError("carried zrtp_hello_hash must be 64 lowercase hex digits")
    unknown = set(message.zrtp_messages_seen) - ZRTP_NAMES
    if unknown:
        raise ValueError("carried zrtp_messages_seen holds an unknown ZRTP message type")
    return LegMemory(
        _from_address(message.rtp_source, "rtp_source"),
        _from_address(message.rtcp_source, "rtcp_source"),
        _first(MAX_SSRCS, message.ssrcs),
        message.zrtp_hello_hash,
        _first(len(ZRTP_NAMES), message.zrtp_messages_seen),
    )


def leg_memory_key(stream_id: str) -> str:
    """The Redis key of a relay session's memory (hash tag: its call's Call-ID)."""
    try:
        call_id, index = parse_stream_id(stream_id)
    except ValueError:
        return LEG_MEMORY_KEY.format(call_id=stream_id, rest="")
    return LEG_MEMORY_KEY.format(call_id=call_id, rest=f"{SEPARATOR}{index}")


def write(
    pipe: Pipeline,
    stream_id: str,
    relay_id: str,
    legs: Mapping[LegSide, LegMemory],
    ttl: int = LEG_MEMORY_TTL,
) -> None:
    """Queue on ``pipe`` the writes of one relay's memory of a stream's legs (an
    empty memory deletes that leg's field)."""
    key = leg_memory_key(stream_id)
    fields: list[bytes | str] = [f"{relay_id}:{AT}", repr(time.time())]
    for side, memory in legs.items():
        name = f"{relay_id}:{int(side)}"
        if memory.empty:
            pipe.hdel(key, name)
        else:
            fields += [name, carried(memory).SerializeToString()]
    pipe.hset(key, items=fields)
    pipe.expire(key, ttl)


async def remember(
    client: redis.Redis,
    stream_id: str,
    relay_id: str,
    legs: Mapping[LegSide, LegMemory],
    ttl: int = LEG_MEMORY_TTL,
) -> None:
    """Write what ``relay_id`` knows of a stream's legs (replacing what it wrote before)."""
    async with client.pipeline(transaction=True) as pipe:
        write(pipe, stream_id, relay_id, legs, ttl)
        await pipe.execute()


async def recall(
    client: redis.Redis, stream_id: str, relay_id: str | None = None
) -> dict[LegSide, LegMemory]:
    """What a relay knew of a stream's legs: ``relay_id``'s, or (None) the one that
    wrote last. Empty when nothing is known (never latched, released, expired).
    A malformed record counts as unknown."""
    raw = {text(k): v for k, v in (await client.hgetall(leg_memory_key(stream_id))).items()}
    if relay_id is None:
        written = {
            name.rpartition(":")[0]: _unix(value)
            for name, value in raw.items()
            if name.endswith(f":{AT}")
        }
        if not written:
            return {}
        relay_id = max(written, key=lambda relay: written[relay])
    found: dict[LegSide, LegMemory] = {}
    for side in LegSide:
        value = raw.get(f"{relay_id}:{int(side)}")
        if value is None:
            continue
        try:
            message = relay_pb2.CarriedLeg.FromString(
                value if isinstance(value, bytes) else value.encode()
            )
            found[side] = from_carried(message)
        except (DecodeError, ValueError):
            continue
    return found


def _unix(value: bytes | str) -> float:
    try:
        return float(text(value))
    except ValueError:
        return 0.0


async def forget(client: redis.Redis, stream_id: str, relay_id: str | None = None) -> None:
    """Delete ``relay_id``'s memory of a stream (None: every relay's): on Release.
    Another relay's (the one a call moved to) stays."""
    if relay_id is None:
        await client.delete(leg_memory_key(stream_id))
        return
    async with client.pipeline(transaction=False) as pipe:
        erase(pipe, stream_id, relay_id)
        await pipe.execute()


def erase(pipe: Pipeline, stream_id: str, relay_id: str) -> None:
    """Queue on ``pipe`` the deletion of ``relay_id``'s memory of a stream."""
    names = [f"{relay_id}:{suffix}" for suffix in (AT, *map(int, LegSide))]
    pipe.hdel(leg_memory_key(stream_id), *names)


async def refresh(
    client: redis.Redis, stream_ids: Iterable[str], ttl: int = LEG_MEMORY_TTL
) -> None:
    """Renew the TTL of these streams' memories (a relay, for the streams it holds)."""
    async with client.pipeline(transaction=False) as pipe:
        for stream_id in stream_ids:
            pipe.expire(leg_memory_key(stream_id), ttl)
        await pipe.execute()
