"""The relay's forwarding over real UDP: unchanged packets both ways, safe latching,
strangers dropped, ZRTP seen without keys, ports back in the pool.

Media goes only to a phone that proved where it is, so each phone here first
says hello from the address its SDP named (as phones do: Linphone's first
packets are STUN requests without ICE)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.zrtp.packet import ZrtpPacket
from quietwire.relay.addresses import AddressPolicy, networks
from quietwire.relay.latch import Channel
from quietwire.relay.legs import Event, EventKind, Leg, LegSpec, RelayCall, Side
from quietwire.relay.ports import PoolExhausted, PortPool
from quietwire.relay.sessions import Relay

from tests.conftest import free_port
from tests.unit.zrtp.harness import FakeClock

VECTORS = Path(__file__).parents[1] / "vectors" / "data" / "bzrtp_exchange.json"
HELLO = bytes.fromhex(json.loads(VECTORS.read_text())["packets"][0]["hex"])
HELLO_HASH = "1.10 " + hashlib.sha256(ZrtpPacket.parse(HELLO).message).hexdigest()
#: The test's phones are on loopback, which a relay refuses by default.
LOOPBACK = AddressPolicy(networks("127.0.0.0/8"))
#: A STUN Binding request without ICE (no magic cookie, no integrity): proof of
#: nothing but where it came from.
PLAIN_STUN = b"\x00\x01" + bytes(18)


class Endpoint:
    """A UDP socket standing for a phone."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def introduce(self, port: int) -> None:
        """The phone's first packet, from the address its SDP named: its leg latches."""
        self.send(PLAIN_STUN, port)

    async def receive(self, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]] | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recvfrom(self.sock, 2048), timeout)
        except TimeoutError:
            return None


class Events(list[Event]):
    """What a relay emitted, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.append(event)
        self.changed.set()

    async def latched(self, *legs: Leg, timeout: float = 5.0) -> None:
        """Until each leg's RTP is latched."""
        async with asyncio.timeout(timeout):
            while any(leg.latch.address(Channel.RTP) is None for leg in legs):
                self.changed.clear()
                await self.changed.wait()


Running = tuple[Relay, Events]


async def muxed_call(
    relay: Running, call_id: str, caller: Endpoint, callee: Endpoint
) -> tuple[RelayCall, Leg, Leg]:
    """A call with rtcp-mux on both legs, each leg told its phone's address and
    latched to it."""
    engine, events = relay
    call = await engine.allocate(call_id, [LegSpec(Side.CALLER, True), LegSpec(Side.CALLEE, True)])
    engine.update(call_id, Side.CALLER, caller.address, None, "")
    engine.update(call_id, Side.CALLEE, callee.address, None, "")
    legs = call.legs[Side.CALLER], call.legs[Side.CALLEE]
    for phone, leg in zip((caller, callee), legs, strict=True):
        phone.introduce(leg.pair.port)
    await events.latched(*legs)
    return call, *legs


@pytest.fixture
async def relay() -> AsyncIterator[Running]:
    first = 2 * (free_port() // 2)
    events = Events()
    engine = Relay(PortPool("127.0.0.1", first, first + 7), events, policy=LOOPBACK)
    yield engine, events
    await engine.close()


async def test_forwards_unchanged_and_refuses_strangers(relay: Running) -> None:
    engine, events = relay
    call = await engine.allocate("c1", [LegSpec(Side.CALLER, False), LegSpec(Side.CALLEE, False)])
    a, b, stranger = Endpoint(), Endpoint(), Endpoint()
    engine.update("c1", Side.CALLER, a.address, None, "")
    engine.update("c1", Side.CALLEE, b.address, None, "")
    caller_port, callee_port = call.legs[Side.CALLER].pair.port, call.legs[Side.CALLEE].pair.port
    b.introduce(callee_port)
    await events.latched(call.legs[Side.CALLEE])
    rtp = Rtp(0, 1, 160, 0xABC, b"\x80" * 160).serialize()
    a.send(rtp, caller_port)
    got = await b.receive()
    assert got == (rtp, ("127.0.0.1", callee_port))
    b.send(rtp[::-1], callee_port)
    assert (await a.receive()) == (rtp[::-1], ("127.0.0.1", caller_port))
    stranger.send(b"\x80" + b"x" * 50, caller_port)
    assert await b.receive(0.3) is None
    assert call.legs[Side.CALLER].stats.packets_dropped == 1
    assert {e.kind for e in events} >= {EventKind.LATCHED, EventKind.MEDIA_STARTED}


async def test_latches_on_a_matching_zrtp_hello_only(relay: Running) -> None:
    engine, events = relay
    call = await engine.allocate(
        "c2", [LegSpec(Side.CALLER, False, HELLO_HASH), LegSpec(Side.CALLEE, False)]
    )
    natted, impostor, b = Endpoint(), Endpoint(), Endpoint()
    engine.update("c2", Side.CALLEE, b.address, None, "")
    caller_port = call.legs[Side.CALLER].pair.port
    b.introduce(call.legs[Side.CALLEE].pair.port)
    await events.latched(call.legs[Side.CALLEE])
    forged = bytearray(HELLO)
    forged[60] ^= 1
    impostor.send(bytes(forged), caller_port)  # a Hello that does not match the SDP
    assert await b.receive(0.3) is None
    natted.send(HELLO, caller_port)  # the real phone, from an address its SDP never named
    assert (await b.receive()) is not None
    assert call.legs[Side.CALLER].latch.address(Channel.RTP) == natted.address
    impostor.send(HELLO, caller_port)  # even a replayed good Hello cannot re-latch
    assert await b.receive(0.3) is None
    hellos = [e for e in events if e.kind is EventKind.ZRTP_MESSAGE]
    assert hellos[0].zrtp_message == "Hello"
    assert "1.10 " + hellos[0].zrtp_hello_hash == HELLO_HASH


async def test_ports_back_in_the_pool(relay: Running) -> None:
    engine, events = relay
    first = await engine.allocate("c3", [LegSpec(Side.CALLER, False), LegSpec(Side.CALLEE, False)])
    second = await engine.allocate("c4", [LegSpec(Side.CALLER, False), LegSpec(Side.CALLEE, False)])
    assert engine.pool.available == 0
    with pytest.raises(PoolExhausted):
        await engine.allocate("c5", [LegSpec(Side.CALLER, False), LegSpec(Side.CALLEE, False)])
    ports = [leg.pair.port for call in (first, second) for leg in call.legs.values()]
    assert engine.release("c3") and engine.expire(idle=0.0) == ["c4"]
    assert engine.pool.available == 4
    assert any(e.kind is EventKind.MEDIA_TIMEOUT for e in events)
    for port in ports:  # nothing is left listening
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))
        probe.close()


async def test_settled_path_counts_and_still_sees_zrtp(relay: Running) -> None:
    """After the first RTP packet the fast path forwards: every packet arrives,
    the folded statistics count them and the lost ones, and a stranger or a
    ZRTP message still take the full path."""
    engine, events = relay
    call = await engine.allocate("c6", [LegSpec(Side.CALLER, True), LegSpec(Side.CALLEE, True)])
    a, b, stranger = Endpoint(), Endpoint(), Endpoint()
    engine.update("c6", Side.CALLER, a.address, None, "")
    engine.update("c6", Side.CALLEE, b.address, None, "")
    caller_port = call.legs[Side.CALLER].pair.port
    b.introduce(call.legs[Side.CALLEE].pair.port)
    await events.latched(call.legs[Side.CALLEE])
    sequences = [n for n in range(1, 101) if n not in (40, 41, 42)]
    for n in sequences:
        a.send(Rtp(0, n, 160 * n, 0xABC, bytes([n]) * 160).serialize(), caller_port)
        got = await b.receive()
        assert got is not None and got[0][-1] == n
    caller_phone = call.legs[Side.CALLER].phone
    assert caller_phone is not None and caller_phone.forward_to is not None
    stranger.send(Rtp(0, 101, 0, 0xABC, b"x" * 160).serialize(), caller_port)
    assert await b.receive(0.3) is None
    goclear = bytearray(HELLO)
    goclear[16:24] = b"GoClear "
    a.send(bytes(goclear), caller_port)
    assert (await b.receive()) is not None
    engine.fold(call)
    stats = call.legs[Side.CALLER].stats
    assert (stats.packets_in, stats.rtp_packets) == (len(sequences) + 1, len(sequences))
    assert stats.rtp_lost == 3
    assert stats.packets_dropped == 1
    assert [e.zrtp_message for e in events if e.kind is EventKind.ZRTP_MESSAGE] == ["GoClear"]


async def test_fast_path_both_ways_follows_a_moved_phone_and_frees_its_ports(
    relay: Running,
) -> None:
    """Settled RTP takes the sockets connected to the phones in both directions; a
    re-INVITE that moves a phone takes that path down and media follows it once the
    phone speaks from its new address; after Release nothing is left bound to the
    call's ports."""
    engine, events = relay
    a, b, c, moved = Endpoint(), Endpoint(), Endpoint(), Endpoint()
    call, caller, callee = await muxed_call(relay, "c8", a, b)
    for n in range(1, 6):
        a.send(Rtp(0, n, 0, 1, b"a" * 160).serialize(), caller.pair.port)
        b.send(Rtp(0, n, 0, 2, b"b" * 160).serialize(), callee.pair.port)
        assert await b.receive() is not None and await a.receive() is not None
    assert caller.phone is not None and callee.phone is not None
    assert caller.phone.forward_to is callee.phone and callee.phone.forward_to is caller.phone
    assert len(engine.paths.fast) == 2
    a.send(b"", caller.pair.port)  # an empty datagram carries nothing to forward
    for runt in (b"\x80", b"\x80\x00\x00"):  # not RTP: the full path forwards it unchanged
        a.send(runt, caller.pair.port)
        got = await b.receive()
        assert got is not None and got[0] == runt
    a.send(Rtp(0, 6, 0, 1, b"a" * 160).serialize(), caller.pair.port)
    assert await b.receive() is not None and caller.phone.forward_to is callee.phone
    engine.fold(call)
    assert (caller.stats.rtp_packets, callee.stats.rtp_packets) == (6, 5)
    engine.release("c8")
    assert len(engine.paths.fast) == 0

    call, caller, callee = await muxed_call(relay, "c9", a, c)
    for n in range(1, 4):
        a.send(Rtp(0, n, 0, 1, b"a" * 160).serialize(), caller.pair.port)
        assert await c.receive() is not None
    assert callee.phone is not None and callee.phone.peer == c.address
    engine.update("c9", Side.CALLEE, moved.address, None, "")
    a.send(Rtp(0, 4, 0, 1, b"a" * 160).serialize(), caller.pair.port)
    assert await c.receive(0.2) is None and await moved.receive(0.2) is None
    moved.introduce(callee.pair.port)
    await events.latched(callee)
    for n in range(5, 9):
        a.send(Rtp(0, n, 0, 1, b"a" * 160).serialize(), caller.pair.port)
        got = await moved.receive()
        assert got is not None and got[1][1] == callee.pair.port
    assert await c.receive(0.2) is None
    assert callee.phone is not None and callee.phone.peer == moved.address
    engine.fold(call)
    assert (caller.stats.rtp_packets, caller.stats.rtp_lost) == (8, 0)

    ports = [leg.pair.port for leg in call.legs.values()]
    assert engine.release("c9") and len(engine.paths.fast) == 0
    for port in ports:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))
        probe.close()


async def test_a_phone_moved_by_reinvite_is_learned_again(
    relay: Running,
) -> None:
    """A re-INVITE naming a new address for a latched phone makes its leg learn again:
    a stranger is still refused, the phone's RTP with the SSRC it used before proves it
    wherever it comes from (behind another NAT), and media follows it both ways."""
    engine, events = relay
    a, b, sdp_address, behind_nat, stranger = (Endpoint() for _ in range(5))
    _, caller, callee = await muxed_call(relay, "c10", a, b)
    for n in range(1, 4):
        a.send(Rtp(0, n, 0, 0xA1, b"a" * 160).serialize(), caller.pair.port)
        assert await b.receive() is not None
    assert caller.latch.address(Channel.RTP) == a.address

    engine.update("c10", Side.CALLER, sdp_address.address, None, "")
    assert caller.latch.address(Channel.RTP) is None
    stranger.send(Rtp(0, 4, 0, 0xBAD, b"s" * 160).serialize(), caller.pair.port)
    assert await b.receive(0.3) is None
    behind_nat.send(Rtp(0, 4, 0, 0xA1, b"a" * 160).serialize(), caller.pair.port)
    assert await b.receive() is not None
    assert caller.latch.address(Channel.RTP) == behind_nat.address
    b.send(Rtp(0, 1, 0, 0xB2, b"b" * 160).serialize(), callee.pair.port)
    got = await behind_nat.receive()
    assert got is not None and got[1][1] == caller.pair.port
    assert caller.stats.packets_dropped == 1
    assert [e.kind for e in events].count(EventKind.LATCHED) >= 3


async def test_live_calls_report_their_statistics() -> None:
    """A call that carried packets since its last report reports again (LEG_STATS per leg);
    a silent one does not."""
    first = 2 * (free_port() // 2)
    events = Events()
    pool = PortPool("127.0.0.1", first, first + 7)
    engine = Relay(pool, events, report_every=0.0, policy=LOOPBACK)
    a, b = Endpoint(), Endpoint()
    _, caller, _ = await muxed_call((engine, events), "c7", a, b)
    a.send(Rtp(0, 1, 160, 0xABC, b"\x80" * 160).serialize(), caller.pair.port)
    assert await b.receive() is not None
    assert engine.expire(idle=60.0) == []
    reports = [e for e in events if e.kind is EventKind.LEG_STATS]
    assert {e.side for e in reports} == {Side.CALLER, Side.CALLEE}
    engine.expire(idle=60.0)
    assert len([e for e in events if e.kind is EventKind.LEG_STATS]) == 2  # silent since
    engine.release("c7")


async def test_expiry_follows_the_relay_clock() -> None:
    """The relay decides on its injected clock: a call silent for the idle time is
    reclaimed, one a second short of it is not."""
    first = 2 * (free_port() // 2)
    events, clock = Events(), FakeClock()
    engine = Relay(PortPool("127.0.0.1", first, first + 7), events, policy=LOOPBACK, clock=clock)
    await muxed_call((engine, events), "c11", Endpoint(), Endpoint())
    clock.t += 59.0
    assert engine.expire(idle=60.0) == []
    clock.t += 2.0
    assert engine.expire(idle=60.0) == ["c11"]
    assert [e.kind for e in events].count(EventKind.MEDIA_TIMEOUT) == 2
    await engine.close()


async def test_a_leg_keeps_known_zrtp_types_only(relay: Running) -> None:
    """A phone sending made-up ZRTP type blocks gets them forwarded, but neither an
    event nor a place in the leg's history: that history stays within the 16 types
    of RFC 6189 section 5."""
    _, events = relay
    a, b = Endpoint(), Endpoint()
    _, caller, _ = await muxed_call(relay, "c12", a, b)
    for n in range(50):
        made_up = bytearray(HELLO)
        made_up[16:24] = f"Bogus{n:03d}".encode()
        a.send(bytes(made_up), caller.pair.port)
        assert await b.receive() is not None
    a.send(HELLO, caller.pair.port)
    assert await b.receive() is not None
    assert list(caller.stats.zrtp_seen) == ["Hello"]
    assert [e.zrtp_message for e in events if e.kind is EventKind.ZRTP_MESSAGE] == ["Hello"]
