"""Relayed calls: two legs, each a port pair, forwarding everything unchanged.

Latching (where a leg's phone really is) is safe against RTP bleed: a leg
latches to the address its SDP named, or to the first source that proves
itself — a ZRTP Hello hashing to the leg's ``a=zrtp-hash``, or a STUN
request — and never re-latches to a stranger mid-call; packets from anyone
else are dropped and counted. Only a new address in the leg's SDP (a re-INVITE
over TLS: the phone changed networks) makes it learn again, and then the
phone's RTP also proves itself by the SSRC it used before. The relay
classifies without keys (RFC 7983 first byte, the ZRTP cookie): which ZRTP
messages went by, the SHA-256 of each side's Hello, RTP sequence and loss.

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
import enum
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.zrtp.messages import message_type
from quietwire.protocols.zrtp.packet import CRC_LENGTH, HEADER_LENGTH
from quietwire.relay.fastpath import FastPaths, PhoneSocket
from quietwire.relay.kernel import KernelPathError, KernelPaths, Link
from quietwire.relay.metrics import CALLS, FORWARDED, NO_DESTINATION, SEND_ERROR, STRANGER
from quietwire.relay.ports import PortPair, PortPool

log = logging.getLogger(__name__)
Address = tuple[str, int]
Phone = PhoneSocket[tuple["RelayCall", "Leg"]]
#: Seconds between the LEG_STATS events of a call that carries media.
REPORT_EVERY = 300.0


class Side(enum.IntEnum):
    """Values as LegSide in relay.proto."""

    CALLER = 1
    CALLEE = 2

    @property
    def other(self) -> Side:
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


class EventKind(enum.IntEnum):
    """Values as MediaEvent.Kind in relay.proto."""

    LATCHED = 1
    ZRTP_MESSAGE = 2
    MEDIA_STARTED = 3
    MEDIA_TIMEOUT = 4
    LEG_STATS = 5


@dataclass(frozen=True, slots=True)
class Event:
    call_id: str
    side: Side
    kind: EventKind
    zrtp_message: str = ""
    zrtp_hello_hash: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class LegStats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_dropped: int = 0
    rtp_packets: int = 0
    rtp_lost: int = 0
    zrtp_seen: dict[str, float] = field(default_factory=dict)
    zrtp_hello_hash: str = ""
    highest_seq: int | None = None


@dataclass(eq=False)
class Leg:
    side: Side
    pair: PortPair
    rtcp_mux: bool = False
    zrtp_hash: str = ""
    expected: dict[str, Address | None] = field(default_factory=lambda: {"rtp": None, "rtcp": None})
    latched: dict[str, Address | None] = field(default_factory=lambda: {"rtp": None, "rtcp": None})
    transports: dict[str, asyncio.DatagramTransport] = field(default_factory=dict)
    #: The RTP port connected to this leg's phone, once the call's path is settled.
    phone: Phone | None = None
    stats: LegStats = field(default_factory=LegStats)
    last_packet: float | None = None
    #: The SSRC of the first RTP this leg's phone sent: after a re-INVITE moved the
    #: phone, its RTP from wherever it now is (behind another NAT) proves it.
    ssrc: bytes = b""

    def target(self, channel: str) -> Address | None:
        return self.latched[channel] or self.expected[channel]


@dataclass(eq=False)
class RelayCall:
    call_id: str
    legs: dict[Side, Leg]
    last_packet: float = field(default_factory=time.monotonic)
    media_started: bool = False
    #: When this call's legs last reported their statistics (a LEG_STATS event).
    reported: float = field(default_factory=time.monotonic)
    #: The call's path through the kernel, when the relay forwards in the kernel.
    link: Link | None = None
    #: Whether it ever had one (flows tracked since may be in the way of a new one).
    linked: bool = False


class _Channel(asyncio.DatagramProtocol):
    """One listening socket of a leg: everything it receives takes the full path."""

    def __init__(self, relay: Relay, call: RelayCall, leg: Leg, channel: str) -> None:
        self.relay, self.call, self.leg, self.channel = relay, call, leg, channel

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.relay.received(self.call, self.leg, self.channel, data, addr)

    def error_received(self, exc: Exception) -> None:
        SEND_ERROR.inc()


class Relay:
    """The forwarding engine of one relay process."""

    def __init__(
        self, pool: PortPool, emit: Callable[[Event], None], report_every: float = REPORT_EVERY
    ) -> None:
        """``report_every``: seconds between a live call's LEG_STATS events (they tell
        keyagreement the call still carries media, however long it lasts)."""
        self.pool = pool
        self.emit = emit
        self.report_every = report_every
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
                legs[side] = Leg(side, self.pool.take(), mux, _hash_of(zrtp_hash))
        except Exception:
            for leg in legs.values():
                self.pool.give_back(leg.pair)
            raise
        call = RelayCall(call_id, legs)
        loop = asyncio.get_running_loop()
        for leg in legs.values():
            for channel, sock in (("rtp", leg.pair.rtp), ("rtcp", leg.pair.rtcp)):
                protocol = _Channel(self, call, leg, channel)
                transport, _ = await loop.create_datagram_endpoint(_factory(protocol), sock=sock)
                leg.transports[channel] = transport
        self.calls[call_id] = call
        CALLS.set(len(self.calls))
        return call

    def update(
        self, call_id: str, side: Side, rtp: Address | None, rtcp: Address | None, zrtp_hash: str
    ) -> bool:
        call = self.calls.get(call_id)
        if call is None or side not in call.legs:
            return False
        leg = call.legs[side]
        if leg.expected["rtp"] not in (None, rtp):
            # The phone moved (its re-INVITE came over TLS): learn where it is again.
            leg.latched = {"rtp": None, "rtcp": None}
        leg.expected["rtp"] = rtp
        leg.expected["rtcp"] = rtcp or (rtp and (rtp[0], rtp[1] + 1))
        if zrtp_hash:
            leg.zrtp_hash = _hash_of(zrtp_hash)
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

    def received(self, call: RelayCall, leg: Leg, channel: str, data: bytes, addr: Address) -> None:
        kind = classify(data)
        stats = leg.stats
        if not self._accept(call, leg, channel, data, kind, addr):
            stats.packets_dropped += 1
            STRANGER.inc()
            return
        stats.packets_in += 1
        stats.bytes_in += len(data)
        call.last_packet = leg.last_packet = time.monotonic()
        if kind is PacketKind.ZRTP:
            self._zrtp(call, leg, data)
        elif kind is PacketKind.RTP:
            self._rtp(call, leg, data)
        other = call.legs.get(leg.side.other)
        if other is None:
            return
        out = channel
        if kind is PacketKind.RTCP and not other.rtcp_mux:
            out = "rtcp"
        elif other.rtcp_mux:
            out = "rtp"
        destination = other.target(out)
        if destination is None:
            NO_DESTINATION.inc()
            return
        if kind is PacketKind.RTP and call.media_started and channel == out == "rtp":
            self._go_fast(call, leg, other, addr, destination)
        other.transports[out].sendto(data, destination)
        FORWARDED.inc()

    def _go_fast(
        self, call: RelayCall, leg: Leg, other: Leg, source: Address, destination: Address
    ) -> None:
        """From now on RTP from ``leg``'s latched phone goes straight to ``other``'s."""
        if leg.latched["rtp"] != source or (leg.phone and leg.phone.peer != source):
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
            self.received(call, leg, "rtp", data, source)

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
        by_port = {leg.pair.port: leg.target("rtp") for leg in call.legs.values()}
        return by_port.get(link.a_port), by_port.get(link.b_port)

    def absorb(self, counts: dict[int, tuple[int, int]]) -> None:
        """Add what the kernel forwarded (packets and bytes by the relay port they
        arrived on) to the legs' statistics."""
        now = time.monotonic()
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
                if leg.phone.peer != leg.target("rtp"):
                    self.fast.close(leg.phone)
                    leg.phone = None

    def _accept(
        self, call: RelayCall, leg: Leg, channel: str, data: bytes, kind: PacketKind, addr: Address
    ) -> bool:
        latched = leg.latched[channel]
        if latched is not None:
            return addr == latched
        proves = (
            addr == leg.expected[channel]
            or kind is PacketKind.STUN
            or (kind is PacketKind.ZRTP and _is_matching_hello(data, leg.zrtp_hash))
            or (kind is PacketKind.RTP and leg.ssrc != b"" and data[8:12] == leg.ssrc)
            or (
                channel == "rtcp"
                and leg.latched["rtp"] is not None
                and addr[0] == leg.latched["rtp"][0]
            )
        )
        if not proves:
            return False
        leg.latched[channel] = addr
        self._settle(call)
        self.emit(Event(call.call_id, leg.side, EventKind.LATCHED))
        return True

    def _zrtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        message = data[HEADER_LENGTH:-CRC_LENGTH]
        block = message_type(message)
        if block is None:
            return
        name = block.decode("ascii", "replace").strip()
        if name in leg.stats.zrtp_seen:
            return
        leg.stats.zrtp_seen[name] = time.time()
        hello_hash = ""
        if name == "Hello":
            hello_hash = hashlib.sha256(message).hexdigest()
            leg.stats.zrtp_hello_hash = hello_hash
        self.emit(Event(call.call_id, leg.side, EventKind.ZRTP_MESSAGE, name, hello_hash))

    def _rtp(self, call: RelayCall, leg: Leg, data: bytes) -> None:
        stats = leg.stats
        stats.rtp_packets += 1
        if not leg.ssrc:
            leg.ssrc = data[8:12]
        sequence = int.from_bytes(data[2:4], "big")
        if stats.highest_seq is not None:
            gap = (sequence - stats.highest_seq) & 0xFFFF
            if 1 < gap < 0x8000:
                stats.rtp_lost += gap - 1
            if 0 < gap < 0x8000:
                stats.highest_seq = sequence
        else:
            stats.highest_seq = sequence
        if not call.media_started:
            call.media_started = True
            self.emit(Event(call.call_id, leg.side, EventKind.MEDIA_STARTED))

    def fold(self, call: RelayCall) -> None:
        """Move the fast paths' counts into the legs' statistics."""
        now = time.monotonic()
        for leg in call.legs.values():
            phone = leg.phone
            if phone is None or not phone.packets:
                continue
            count, stats = phone.packets, leg.stats
            stats.packets_in += count
            stats.rtp_packets += count
            stats.bytes_in += phone.bytes
            sequence = int.from_bytes(phone.last[2:4], "big")
            if stats.highest_seq is not None:
                gap = (sequence - stats.highest_seq) & 0xFFFF
                if gap < 0x8000:
                    stats.rtp_lost += max(0, gap - count)
                    stats.highest_seq = sequence
            phone.packets = phone.bytes = 0
            FORWARDED.inc(count)
            call.last_packet = leg.last_packet = now

    def expire(self, idle: float) -> list[str]:
        """Release calls silent for ``idle`` seconds, or whose one side fell silent that
        long after sending (a phone that died mid-call); their ids. Folds first."""
        for call in self.calls.values():
            self.fold(call)
        now = time.monotonic()

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


def _hash_of(zrtp_hash: str) -> str:
    """The hex part of ``a=zrtp-hash:1.10 <hex>``, lower case."""
    return zrtp_hash.split()[-1].lower() if zrtp_hash else ""


def _is_matching_hello(data: bytes, expected: str) -> bool:
    message = data[HEADER_LENGTH:-CRC_LENGTH]
    return (
        bool(expected)
        and message_type(message) == b"Hello   "
        and (hashlib.sha256(message).hexdigest() == expected)
    )
