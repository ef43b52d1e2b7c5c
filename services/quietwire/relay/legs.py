"""What the relay holds per call: two legs, each a port pair, its latch and its statistics."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.relay.fastpath import PhoneSocket
from quietwire.relay.kernel import Link
from quietwire.relay.latch import Channel, Latch
from quietwire.relay.ports import PortPair
from quietwire.runtime.legmemory import EMPTY, MAX_SSRCS, LegMemory, LegSide

Phone = PhoneSocket[tuple["RelayCall", "Leg"]]
#: Half the RTP sequence space (RFC 3550 appendix A.1): a larger step is a
#: packet from the past (reordered or duplicated), not a jump forward.
SEQUENCE_HALF = 0x8000


#: Which side of the call a leg faces (values as LegSide in relay.proto).
Side = LegSide


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
    #: Wall-clock time, for the record (decisions use the relay's monotonic clock).
    at: float = field(default_factory=time.time)


@dataclass
class LegStats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_dropped: int = 0
    rtp_packets: int = 0
    rtp_lost: int = 0
    #: The first event of each ZRTP message type seen, in order (replayed to a
    #: late subscriber of the event stream).
    zrtp_seen: dict[str, Event] = field(default_factory=dict)
    zrtp_hello_hash: str = ""
    highest_seq: int | None = None

    def count_rtp(self, sequence: int, packets: int) -> None:
        """``packets`` RTP packets arrived, the last with ``sequence``: the sequence
        numbers they skipped count as lost (RFC 3550 appendix A.1, without the
        probation and restart detection a receiver does)."""
        self.rtp_packets += packets
        if self.highest_seq is None:
            self.highest_seq = sequence
            return
        step = (sequence - self.highest_seq) & 0xFFFF
        if step < SEQUENCE_HALF:
            self.rtp_lost += max(0, step - packets)
            self.highest_seq = sequence


@dataclass(frozen=True, slots=True)
class LegSpec:
    """What Allocate asks of a leg: its side, RTP and RTCP on one port (RFC 5761),
    its phone's a=zrtp-hash, and what the relay it comes from knew of the phone
    (a call's migration; None for a new call)."""

    side: Side
    rtcp_mux: bool = False
    zrtp_hash: str = ""
    carried: LegMemory | None = None


@dataclass(eq=False)
class Leg:
    side: Side
    pair: PortPair
    latch: Latch
    rtcp_mux: bool = False
    #: The ICE credentials of this leg's phone (its SDP), if it uses ICE.
    ice: IceCredentials | None = None
    transports: dict[Channel, asyncio.DatagramTransport] = field(default_factory=dict)
    #: The RTP port connected to this leg's phone, once the call's path is settled.
    phone: Phone | None = None
    stats: LegStats = field(default_factory=LegStats)
    last_packet: float | None = None
    #: What the relay this leg came from knew of its phone (a call's migration).
    carried: LegMemory = EMPTY
    #: The SSRCs of the phone's RTP seen here (4 bytes each), in order, at most MAX_SSRCS.
    ssrcs: list[bytes] = field(default_factory=list)

    def saw_ssrc(self, ssrc: bytes) -> bool:
        """Note an SSRC of the phone's RTP; whether it is new (and kept)."""
        if ssrc in self.ssrcs or len(self.ssrcs) >= MAX_SSRCS or len(ssrc) != 4:
            return False
        self.ssrcs.append(ssrc)
        return True

    def memory(self) -> LegMemory:
        """What this relay knows of the leg's phone: what it carried, and what it saw."""
        seen = LegMemory(
            self.latch.address(Channel.RTP),
            self.latch.address(Channel.RTCP),
            tuple(int.from_bytes(ssrc, "big") for ssrc in self.ssrcs),
            self.stats.zrtp_hello_hash,
            tuple(self.stats.zrtp_seen),
        )
        return self.carried.merged(seen)


@dataclass(eq=False)
class RelayCall:
    call_id: str
    legs: dict[Side, Leg]
    #: Monotonic times (the relay's clock): the last packet, the last LEG_STATS report.
    last_packet: float
    reported: float
    media_started: bool = False
    #: The call's path through the kernel, when the relay forwards in the kernel.
    link: Link | None = None
    #: Whether it ever had one (flows tracked since may be in the way of a new one).
    linked: bool = False
    #: Monotonic time of its allocation (its age, for reconciliation).
    allocated: float = 0.0
