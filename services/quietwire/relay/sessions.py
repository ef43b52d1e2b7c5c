"""Relayed calls: two legs, each a port pair, forwarding everything unchanged.

Each leg latches to its phone only on proof (:mod:`quietwire.relay.latch`),
and media goes only to latched phones: never to an address a phone merely
named, never to a name, never where the address policy refuses
(:mod:`quietwire.relay.addresses`). Packets from anyone else are dropped and
counted. The relay classifies without keys (RFC 7983 first byte, the ZRTP
cookie): which ZRTP messages went by, the SHA-256 of each side's Hello, RTP
sequence and loss.

Per-packet Python is what a relay's capacity is made of, so once a call's
path is settled its RTP takes the fast path (:mod:`quietwire.relay.fastpath`):
sockets connected to the phones, counted and sent on, nothing else. The
counts are folded into the leg's statistics (packets, bytes, loss from the
sequence numbers, last activity) about once a second (:meth:`Relay.fold`).
Everything else — ZRTP, STUN, RTCP, strangers, the first packets — takes the
full path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator

from quietwire.protocols.clock import Clock, MonotonicClock
from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.protocols.zrtp.messages import message_type
from quietwire.protocols.zrtp.packet import CRC_LENGTH, HEADER_LENGTH
from quietwire.relay.addresses import Address, AddressPolicy
from quietwire.relay.fastpath import FastPaths
from quietwire.relay.kernel import KernelPathError, KernelPaths, Link
from quietwire.relay.latch import Channel, Latch, Verdict, hello_hash, signaled_hash
from quietwire.relay.legs import Event, EventKind, Leg, Phone, RelayCall, Side
from quietwire.relay.metrics import CALLS, FORWARDED, NO_DESTINATION, SEND_ERROR, STRANGER
from quietwire.relay.ports import PortPool

log = logging.getLogger(__name__)
#: Seconds between the LEG_STATS events of a call that carries media.
REPORT_EVERY = 300.0


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
    ) -> None:
        """``report_every``: seconds between a live call's LEG_STATS events (they tell
        keyagreement the call still carries media, however long it lasts);
        ``policy``: where media may go (default: no loopback, link-local, multicast)."""
        self.pool = pool
        self.emit = emit
        self.report_every = report_every
        self.policy = policy or AddressPolicy()
        self.clock = clock or MonotonicClock()
        self.calls: dict[str, RelayCall] = {}
        self.draining = False
        self.fast: FastPaths[tuple[RelayCall, Leg]] = FastPaths(self._from_phone)
        #: Set (started) when settled calls are forwarded by the kernel instead.
        self.kernel: KernelPaths | None = None
        self._kernel_work: set[asyncio.Task[None]] = set()

    async def allocate(self, call_id: str, specs: list[tuple[Side, bool, str]]) -> RelayCall:
        """Ports for each leg (side, rtcp-mux, a=zrtp-hash); the same call twice gets the same."""
        if call_id in self.calls:
            return self.calls[call_id]
        legs: dict[Side, Leg] = {}
        try:
            for side, mux, zrtp_hash in specs:
                latch = Latch(self.policy, signaled_hash(zrtp_hash))
                legs[side] = Leg(side, self.pool.take(), latch, mux)
        except Exception:
            for leg in legs.values():
                self.pool.give_back(leg.pair)
            raise
        now = self.clock.now()
        call = RelayCall(call_id, legs, last_packet=now, reported=now)
        loop = asyncio.get_running_loop()
        for leg in legs.values():
            for channel, sock in ((Channel.RTP, leg.pair.rtp), (Channel.RTCP, leg.pair.rtcp)):
                protocol = _Channel(self, call, leg, channel)
                transport, _ = await loop.create_datagram_endpoint(_factory(protocol), sock=sock)
                leg.transports[channel] = transport
        self.calls[call_id] = call
        CALLS.set(len(self.calls))
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
        leg.latch.expect(rtp, rtcp, zrtp_hash)
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
        self._unlink(call)
        for leg in call.legs.values():
            if leg.phone is not None:
                self.fast.close(leg.phone, keep_queued=False)
            for transport in leg.transports.values():
                transport.close()
            self.pool.give_back(leg.pair)
        CALLS.set(len(self.calls))
        return True

    async def close(self) -> None:
        for call_id in list(self.calls):
            self.release(call_id)
        self.fast.shutdown()
        await asyncio.gather(*self._kernel_work, return_exceptions=True)
        if self.kernel is not None:
            await self.kernel.close()

    def zrtp_history(self) -> Iterator[Event]:
        """Every live leg's ZRTP messages seen so far, in order: what a new subscriber
        of the event stream must learn first (a Hello seen before it subscribed)."""
        for call in self.calls.values():
            for leg in call.legs.values():
                yield from leg.stats.zrtp_seen.values()

    def received(
        self, call: RelayCall, leg: Leg, channel: Channel, data: bytes, addr: Address
    ) -> None:
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
        stats.packets_in += 1
        stats.bytes_in += len(data)
        call.last_packet = leg.last_packet = self.clock.now()
        if kind is PacketKind.ZRTP:
            self._zrtp(call, leg, data)
        elif kind is PacketKind.RTP:
            self._rtp(call, leg, data)
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
            self._go_fast(call, leg, other, addr, destination)
        other.transports[out].sendto(data, destination)
        FORWARDED.inc()

    def _go_fast(
        self, call: RelayCall, leg: Leg, other: Leg, source: Address, destination: Address
    ) -> None:
        """From now on RTP from ``leg``'s latched phone goes straight to ``other``'s."""
        if leg.latch.address(Channel.RTP) != source or (leg.phone and leg.phone.peer != source):
            return
        if self.kernel is not None:
            if call.link is None:
                self._link(call, Link(source, leg.pair.port, destination, other.pair.port))
            return
        try:
            if leg.phone is None:
                leg.phone = self._phone(call, leg, source)
            if other.phone is None:
                other.phone = self._phone(call, other, destination)
        except OSError as exc:
            log.warning("no fast path", extra={"relay_call": call.call_id, "error": str(exc)})
            return
        leg.phone.forward_to = other.phone

    def _phone(self, call: RelayCall, leg: Leg, peer: Address) -> Phone:
        rtp = leg.pair.rtp
        return self.fast.open(rtp.family, rtp.getsockname()[:2], peer, (call, leg))

    def _from_phone(self, owner: tuple[RelayCall, Leg], data: bytes, source: Address) -> None:
        call, leg = owner
        if self.calls.get(call.call_id) is call:
            self.received(call, leg, Channel.RTP, data, source)

    def _link(self, call: RelayCall, link: Link) -> None:
        assert self.kernel is not None
        call.link, again = link, call.linked
        call.linked = True
        self._in_order(call, self.kernel.link(link, forget=again))

    def _unlink(self, call: RelayCall) -> None:
        if call.link is not None and self.kernel is not None:
            self._in_order(call, self.kernel.unlink(call.link))
            call.link = None

    def _in_order(self, call: RelayCall, change: Coroutine[None, None, None]) -> None:
        """Kernel changes run one after the other, in the order asked (the kernel
        paths' one thread), never blocking the forwarding."""

        async def run() -> None:
            try:
                await change
            except KernelPathError as exc:
                extra = {"relay_call": call.call_id, "error": str(exc)}
                log.warning("kernel path not changed", extra=extra)

        task = asyncio.get_running_loop().create_task(run())
        self._kernel_work.add(task)
        task.add_done_callback(self._kernel_work.discard)

    @staticmethod
    def _phones(call: RelayCall, link: Link) -> tuple[Address | None, Address | None]:
        """Where the linked legs' phones are now (by their relay ports)."""
        by_port = {leg.pair.port: leg.latch.address(Channel.RTP) for leg in call.legs.values()}
        return by_port.get(link.a_port), by_port.get(link.b_port)

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
        """Latching or the SDP may have moved a leg's phone: a kernel link or a phone
        socket to where it no longer is goes, and every socket fast path is taken
        down (the next RTP packet through the full path sets it up again)."""
        self.fold(call)
        link = call.link
        if link is not None and (link.a, link.b) != self._phones(call, link):
            self._unlink(call)
        for leg in call.legs.values():
            if leg.phone is not None:
                leg.phone.forward_to = None
                if leg.phone.peer != leg.latch.address(Channel.RTP):
                    self.fast.close(leg.phone)
                    leg.phone = None

    def _zrtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        block = message_type(data[HEADER_LENGTH:-CRC_LENGTH])
        if block is None:
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

    def _rtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        if not leg.latch.ssrc:
            leg.latch.ssrc = data[8:12]
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
