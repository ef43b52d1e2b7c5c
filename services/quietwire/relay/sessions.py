"""Relayed calls: two legs, each a port pair, forwarding everything unchanged.

Each leg latches to its phone only on proof (:mod:`quietwire.relay.latch`),
and media goes only to latched phones: never to an address a phone merely
named, never to a name, never where the address policy refuses
(:mod:`quietwire.relay.addresses`). Packets from anyone else are dropped and
counted. The relay classifies without keys (RFC 7983 first byte, the ZRTP
cookie): which ZRTP messages went by, the SHA-256 of each side's Hello, RTP
sequence and loss.

Per-packet Python is what a relay's capacity is made of, so once a call's
path is settled its RTP takes a short cut (:mod:`quietwire.relay.paths`):
sockets connected to the phones, counted and sent on, nothing else, or the
kernel. The counts are folded into the leg's statistics (packets, bytes, loss
from the sequence numbers, last activity) about once a second
(:meth:`Relay.fold`). Everything else — ZRTP, STUN, RTCP, strangers, the
first packets — takes the full path (:meth:`Relay.received`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from quietwire.protocols.clock import Clock, MonotonicClock
from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.protocols.zrtp.messages import MESSAGE_TYPES, message_type
from quietwire.protocols.zrtp.packet import CRC_LENGTH, HEADER_LENGTH
from quietwire.relay.addresses import Address, AddressPolicy
from quietwire.relay.latch import Channel, Latch, Verdict, hello_hash, signaled_hash
from quietwire.relay.legs import Event, EventKind, Leg, LegSpec, RelayCall, Side
from quietwire.relay.metrics import CALLS, FORWARDED, NO_DESTINATION, SEND_ERROR, STRANGER
from quietwire.relay.paths import SettledPaths
from quietwire.relay.ports import PortPool

log = logging.getLogger(__name__)
#: Seconds between the LEG_STATS events of a call that carries media.
REPORT_EVERY = 300.0


class MemorySink(Protocol):
    """Where the engine says what its legs learnt (:mod:`quietwire.relay.memory`):
    called on the packet path, so it must only take note, never wait."""

    def changed(self, call: RelayCall) -> None:
        """A leg of ``call`` latched, saw a new SSRC or ZRTP message type, or was
        allocated with what another relay knew."""

    def released(self, call_id: str) -> None:
        """The call is gone from this relay."""


class _Forgetful:
    def changed(self, call: RelayCall) -> None:
        pass

    def released(self, call_id: str) -> None:
        pass


class _Channel(asyncio.DatagramProtocol):
    """One listening socket of a leg: everything it receives takes the full path."""

    def __init__(self, relay: Relay, call: RelayCall, leg: Leg, channel: Channel) -> None:
        self.relay, self.call, self.leg, self.channel = relay, call, leg, channel

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay.received(self.call, self.leg, self.channel, data, addr)

    def error_received(self, exc: Exception) -> None:
        SEND_ERROR.inc()


class Relay:
    """The forwarding engine of one relay process."""

    def __init__(
        self,
        pool: PortPool,
        emit: Callable[[Event], None],
        report_every: float = REPORT_EVERY,
        *,
        policy: AddressPolicy | None = None,
        clock: Clock | None = None,
        memory: MemorySink | None = None,
    ) -> None:
        """``report_every``: seconds between a live call's LEG_STATS events (they tell
        keyagreement the call still carries media, however long it lasts);
        ``policy``: where media may go (default: no loopback, link-local, multicast);
        ``memory``: told what the legs learn (default: nobody)."""
        self.pool = pool
        self.emit = emit
        self.report_every = report_every
        self.policy = policy or AddressPolicy()
        self.clock = clock or MonotonicClock()
        self.calls: dict[str, RelayCall] = {}
        self.draining = False
        self.paths = SettledPaths(self._from_phone)
        self.memory: MemorySink = memory or _Forgetful()

    async def allocate(self, call_id: str, specs: Sequence[LegSpec]) -> RelayCall:
        """Ports for each leg; the same call twice gets the same. A carried leg
        (a call moved here) latches to its phone on what the last relay knew."""
        if call_id in self.calls:
            return self.calls[call_id]
        legs: dict[Side, Leg] = {}
        try:
            for spec in specs:
                latch = Latch(self.policy, signaled_hash(spec.zrtp_hash))
                leg = Leg(spec.side, self.pool.take(), latch, spec.rtcp_mux)
                legs[spec.side] = leg
                if spec.carried is not None:
                    leg.carried = spec.carried
                    latch.carry(
                        spec.carried.rtp_source, spec.carried.rtcp_source, spec.carried.ssrcs
                    )
        except Exception:
            for leg in legs.values():
                self.pool.give_back(leg.pair)
            raise
        now = self.clock.now()
        call = RelayCall(call_id, legs, last_packet=now, reported=now, allocated=now)
        loop = asyncio.get_running_loop()
        for leg in legs.values():
            for channel, sock in ((Channel.RTP, leg.pair.rtp), (Channel.RTCP, leg.pair.rtcp)):
                protocol = _Channel(self, call, leg, channel)
                transport, _ = await loop.create_datagram_endpoint(_factory(protocol), sock=sock)
                leg.transports[channel] = transport
        self.calls[call_id] = call
        CALLS.set(len(self.calls))
        if any(spec.carried is not None for spec in specs):
            self.memory.changed(call)
        return call

    def update(
        self,
        call_id: str,
        side: Side,
        rtp: Address | None,
        rtcp: Address | None,
        zrtp_hash: str,
        ice: IceCredentials | None = None,
    ) -> bool:
        """A leg's SDP: where its phone said it receives, its a=zrtp-hash and ICE
        credentials. Latches the SDP no longer proves are dropped (the leg learns again)."""
        call = self.calls.get(call_id)
        if call is None or side not in call.legs:
            return False
        leg = call.legs[side]
        if leg.latch.expect(rtp, rtcp, zrtp_hash):
            self.memory.changed(call)
        if ice is not None:
            leg.ice = ice
        other = call.legs.get(side.other)
        if other is not None:
            leg.latch.credentials(leg.ice, other.ice)
            other.latch.credentials(other.ice, leg.ice)
        self._settle(call)
        return True

    def release(self, call_id: str) -> bool:
        call = self.calls.pop(call_id, None)
        if call is None:
            return False
        self.fold(call)
        self.paths.release(call)
        for leg in call.legs.values():
            for transport in leg.transports.values():
                transport.close()
            self.pool.give_back(leg.pair)
        CALLS.set(len(self.calls))
        self.memory.released(call_id)
        return True

    async def close(self) -> None:
        for call_id in list(self.calls):
            self.release(call_id)
        await self.paths.close()

    def zrtp_history(self) -> Iterator[Event]:
        """Every live leg's ZRTP messages seen so far, in order: what a new subscriber
        of the event stream must learn first (a Hello seen before it subscribed)."""
        for call in self.calls.values():
            for leg in call.legs.values():
                yield from leg.stats.zrtp_seen.values()

    def received(
        self, call: RelayCall, leg: Leg, channel: Channel, data: bytes, addr: Address
    ) -> None:
        """The full path: latch decision, statistics and ZRTP observation, forwarding."""
        kind = classify(data)
        stats = leg.stats
        decision = leg.latch.accept(channel, kind, addr, data)
        if decision.verdict is Verdict.DROP:
            stats.packets_dropped += 1
            STRANGER.inc()
            return
        if decision.proof is not None:
            leg.latch.latch(channel, addr, decision.proof)
            self._settle(call)
            self.emit(Event(call.call_id, leg.side, EventKind.LATCHED))
            self.memory.changed(call)
        stats.packets_in += 1
        stats.bytes_in += len(data)
        call.last_packet = leg.last_packet = self.clock.now()
        if kind is PacketKind.ZRTP:
            self._zrtp(call, leg, data)
        elif kind is PacketKind.RTP:
            self._rtp(call, leg, data)
        self._forward(call, leg, channel, kind, data, addr)

    def _forward(
        self,
        call: RelayCall,
        leg: Leg,
        channel: Channel,
        kind: PacketKind,
        data: bytes,
        addr: Address,
    ) -> None:
        """To the other leg's latched phone, on the channel it takes this packet on
        (RTCP on its own port unless that phone multiplexes, RFC 5761)."""
        other = call.legs.get(leg.side.other)
        if other is None:
            return
        out = channel
        if kind is PacketKind.RTCP and not other.rtcp_mux:
            out = Channel.RTCP
        elif other.rtcp_mux:
            out = Channel.RTP
        destination = other.latch.address(out)
        if destination is None:
            NO_DESTINATION.inc()
            return
        if kind is PacketKind.RTP and call.media_started and channel is out is Channel.RTP:
            self.paths.open(call, leg, other, addr, destination)
        other.transports[out].sendto(data, destination)
        FORWARDED.inc()

    def _from_phone(self, owner: tuple[RelayCall, Leg], data: bytes, source: Address) -> None:
        call, leg = owner
        if self.calls.get(call.call_id) is call:
            self.received(call, leg, Channel.RTP, data, source)

    def absorb(self, counts: dict[int, tuple[int, int]]) -> None:
        """Add what the kernel forwarded (packets and bytes by the relay port they
        arrived on) to the legs' statistics."""
        now = self.clock.now()
        for call in self.calls.values():
            if call.link is None:
                continue
            for leg in call.legs.values():
                packets, octets = counts.get(leg.pair.port, (0, 0))
                if packets:
                    leg.stats.packets_in += packets
                    leg.stats.rtp_packets += packets
                    leg.stats.bytes_in += octets
                    call.last_packet = leg.last_packet = now
                    FORWARDED.inc(packets)

    def _settle(self, call: RelayCall) -> None:
        """A leg's phone may have moved: fold, then take stale paths down."""
        self.fold(call)
        self.paths.settle(call)

    def _zrtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        """The first message of each type (RFC 6189 section 5) is an event and kept for
        late subscribers; an unknown type block is forwarded, not kept (a phone
        could otherwise grow a leg's history without bound)."""
        block = message_type(data[HEADER_LENGTH:-CRC_LENGTH])
        if block not in MESSAGE_TYPES:
            return
        name = block.decode("ascii", "replace").strip()
        if name in leg.stats.zrtp_seen:
            return
        hello = hello_hash(data) or ""
        if hello:
            leg.stats.zrtp_hello_hash = hello
        event = Event(call.call_id, leg.side, EventKind.ZRTP_MESSAGE, name, hello)
        leg.stats.zrtp_seen[name] = event
        self.emit(event)
        self.memory.changed(call)

    def _rtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        ssrc = data[8:12]
        if not leg.latch.ssrc:
            leg.latch.ssrc = ssrc
        if leg.saw_ssrc(ssrc):
            self.memory.changed(call)
        leg.stats.count_rtp(int.from_bytes(data[2:4], "big"), 1)
        if not call.media_started:
            call.media_started = True
            self.emit(Event(call.call_id, leg.side, EventKind.MEDIA_STARTED))

    def fold(self, call: RelayCall) -> None:
        """Move the fast paths' counts into the legs' statistics."""
        now = self.clock.now()
        for leg in call.legs.values():
            phone = leg.phone
            if phone is None or not phone.packets:
                continue
            count, stats = phone.packets, leg.stats
            if leg.saw_ssrc(phone.last[8:12]):  # a new SSRC on the fast path
                self.memory.changed(call)
            stats.packets_in += count
            stats.bytes_in += phone.bytes
            stats.count_rtp(int.from_bytes(phone.last[2:4], "big"), count)
            phone.packets = phone.bytes = 0
            FORWARDED.inc(count)
            call.last_packet = leg.last_packet = now

    def expire(self, idle: float) -> list[str]:
        """Release calls silent for ``idle`` seconds, or whose one side fell silent that
        long after sending (a phone that died mid-call); their ids. Folds first."""
        for call in self.calls.values():
            self.fold(call)
        now = self.clock.now()

        def dead(call: RelayCall) -> bool:
            if now - call.last_packet > idle:
                return True
            return any(
                leg.last_packet is not None and now - leg.last_packet > idle
                for leg in call.legs.values()
            )

        gone = [c.call_id for c in self.calls.values() if dead(c)]
        for call_id in gone:
            call = self.calls[call_id]
            for side in call.legs:
                self.emit(Event(call_id, side, EventKind.MEDIA_TIMEOUT))
            self.release(call_id)
        for call in self.calls.values():
            if now - call.reported >= self.report_every and call.last_packet > call.reported:
                call.reported = now
                for side in call.legs:
                    self.emit(Event(call.call_id, side, EventKind.LEG_STATS))
        return gone


def _factory(protocol: _Channel) -> Callable[[], _Channel]:
    return lambda: protocol
