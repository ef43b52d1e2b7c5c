"""A stand-in for a relay where a relay is not what a test is about (a phone
taking a move): two UDP ports, each latched on the first source it hears,
forwarding to the other's latched source and counting what it forwarded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as ka


@dataclass(eq=False)
class Side(asyncio.DatagramProtocol):
    """One end of the forwarder: latched on the first source it hears."""

    name: str
    forwarder: Forwarder
    transport: asyncio.DatagramTransport | None = None
    latched: tuple[str, int] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.latched = self.latched or addr
        if addr == self.latched:
            self.forwarder.relay(self, data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@dataclass(eq=False)
class Forwarder:
    sides: list[Side] = field(default_factory=list)
    #: Packets forwarded, by the side they came from and kind.
    counts: Counter[tuple[str, PacketKind]] = field(default_factory=Counter)

    def relay(self, source: Side, data: bytes) -> None:
        other = next(s for s in self.sides if s is not source)
        if other.transport is not None and other.latched is not None:
            other.transport.sendto(data, other.latched)
            self.counts[source.name, classify(data)] += 1

    def endpoint(self, index: int) -> ka.RelayEndpoint:
        port = self.sides[index].port
        return ka.RelayEndpoint(host="127.0.0.1", rtp_port=port, rtcp_port=port + 1)

    def plan(self) -> list[ka.MediaPlan]:
        """Its two ports as a call's one stream (the caller's side first)."""
        return [ka.MediaPlan(toward_caller=self.endpoint(0), toward_callee=self.endpoint(1))]

    def forwarded(self, side: str, kind: PacketKind = PacketKind.RTP) -> int:
        return self.counts[side, kind]


@asynccontextmanager
async def forwarder() -> AsyncIterator[Forwarder]:
    """A :class:`Forwarder` on two free loopback ports, closed after."""
    loop = asyncio.get_running_loop()
    made = Forwarder()
    for name in ("caller", "callee"):
        side = Side(name, made)
        side.transport, _ = await loop.create_datagram_endpoint(
            lambda side=side: side,  # type: ignore[misc]
            local_addr=("127.0.0.1", 0),
        )
        made.sides.append(side)
    try:
        yield made
    finally:
        for side in made.sides:
            if side.transport is not None:
                side.transport.close()
