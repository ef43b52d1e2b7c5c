"""Latching (where a leg's phone really is), as a pure decision: no sockets, no clock.

A leg latches each channel to the first source that proves it is the leg's
phone, and then takes packets on that channel from that source only; anyone
else is a stranger, dropped and counted. Proof is what a stranger off the
signaling path cannot produce:

- the address the phone's SDP named (over TLS), if the address policy permits it;
- a ZRTP Hello whose SHA-256 is the leg's ``a=zrtp-hash`` (RFC 6189 section 8.1);
- a STUN Binding request with the ICE USERNAME and a valid MESSAGE-INTEGRITY
  (RFC 8445 section 7.2.2), when the phones' ICE credentials are known;
- after a re-INVITE moved a latched phone: its RTP with the SSRC it used before;
- on RTCP: the host whose RTP latched (its RTCP port may be translated apart).

A STUN-shaped packet without integrity proves nothing (any 20 bytes can look
like one). A new SDP address or ``a=zrtp-hash`` re-checks the latches: those
whose proof no longer holds are dropped, and the leg learns again.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from quietwire.protocols.rtp.demux import PacketKind
from quietwire.protocols.rtp.errors import ParseError
from quietwire.protocols.rtp.stun import IceCredentials, StunRequest
from quietwire.protocols.zrtp.messages import message_type
from quietwire.protocols.zrtp.packet import CRC_LENGTH, HEADER_LENGTH
from quietwire.relay.addresses import Address, AddressPolicy

HELLO = b"Hello   "


class Channel(enum.Enum):
    """A leg's two ports (RFC 3550 section 11); with rtcp-mux both ride on RTP."""

    RTP = "rtp"
    RTCP = "rtcp"


class Proof(enum.Enum):
    """Why a channel latched to its source."""

    SDP_ADDRESS = "sdp-address"
    ZRTP_HELLO = "zrtp-hello"
    STUN_INTEGRITY = "stun-integrity"
    SSRC = "ssrc"
    BESIDE_RTP = "beside-rtp"


class Verdict(enum.Enum):
    ACCEPT = "accept"  # from the latched source
    LATCH = "latch"  # proof: latch to the source now, then accept
    DROP = "drop"  # a stranger


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    proof: Proof | None = None


ACCEPT, DROP = Decision(Verdict.ACCEPT), Decision(Verdict.DROP)


@dataclass(frozen=True, slots=True)
class Latched:
    address: Address
    proof: Proof


def hello_hash(data: bytes) -> str | None:
    """The lowercase hex SHA-256 of a ZRTP packet's Hello message, None if not a Hello."""
    message = data[HEADER_LENGTH:-CRC_LENGTH]
    if message_type(message) != HELLO:
        return None
    return hashlib.sha256(message).hexdigest()


def signaled_hash(zrtp_hash: str) -> str:
    """The hex part of ``a=zrtp-hash:1.10 <hex>``, lower case."""
    return zrtp_hash.split()[-1].lower() if zrtp_hash.split() else ""


@dataclass(eq=False)
class Latch:
    """What one leg knows of its phone, per channel."""

    policy: AddressPolicy
    #: The hex a=zrtp-hash of the leg's SDP, lower case.
    zrtp_hash: str = ""
    expected: dict[Channel, Address | None] = field(default_factory=lambda: dict.fromkeys(Channel))
    latched: dict[Channel, Latched | None] = field(default_factory=lambda: dict.fromkeys(Channel))
    #: The SSRC of the first RTP the phone sent (proof after a re-INVITE moved it).
    ssrc: bytes = b""
    #: The STUN USERNAME and key that prove the phone (RFC 8445 section 7.2.2), if known.
    stun: tuple[str, str] | None = None

    def address(self, channel: Channel) -> Address | None:
        """Where the phone is on ``channel``, if it proved it: the only destination."""
        latched = self.latched[channel]
        return latched.address if latched is not None else None

    def accept(self, channel: Channel, kind: PacketKind, source: Address, data: bytes) -> Decision:
        """What to do with a packet from ``source`` on ``channel``; changes nothing."""
        latched = self.latched[channel]
        if latched is not None:
            return ACCEPT if source == latched.address else DROP
        proof = self._proof(channel, kind, source, data)
        if proof is None or not self.policy.permits(source[0]):
            return DROP
        return Decision(Verdict.LATCH, proof)

    def _proof(
        self, channel: Channel, kind: PacketKind, source: Address, data: bytes
    ) -> Proof | None:
        if source == self.expected[channel]:
            return Proof.SDP_ADDRESS
        if kind is PacketKind.ZRTP and self.zrtp_hash and hello_hash(data) == self.zrtp_hash:
            return Proof.ZRTP_HELLO
        if kind is PacketKind.STUN and self.stun is not None and _stun_proves(data, *self.stun):
            return Proof.STUN_INTEGRITY
        if kind is PacketKind.RTP and self.ssrc and data[8:12] == self.ssrc:
            return Proof.SSRC
        rtp = self.latched[Channel.RTP]
        if channel is Channel.RTCP and rtp is not None and source[0] == rtp.address[0]:
            return Proof.BESIDE_RTP
        return None

    def latch(self, channel: Channel, source: Address, proof: Proof) -> None:
        self.latched[channel] = Latched(source, proof)

    def expect(self, rtp: Address | None, rtcp: Address | None, zrtp_hash: str) -> bool:
        """The leg's SDP (an offer, an answer, a re-INVITE); whether a latch was dropped.

        A phone that moved (a new RTP address in place of another) learns again;
        otherwise each latch is re-checked against what the SDP now says."""
        moved = self.expected[Channel.RTP] not in (None, rtp)
        rtp, rtcp = self.policy.peer(rtp), self.policy.peer(rtcp)
        self.expected[Channel.RTP] = rtp
        self.expected[Channel.RTCP] = rtcp or (rtp and (rtp[0], rtp[1] + 1))
        rehashed = False
        if zrtp_hash:
            rehashed = signaled_hash(zrtp_hash) != self.zrtp_hash
            self.zrtp_hash = signaled_hash(zrtp_hash)
        if rehashed and moved:
            # Another phone (a forked callee's answer took the leg over): the
            # first one's SSRC proves nothing about it.
            self.ssrc = b""
        dropped = False
        for channel, latched in self.latched.items():
            if latched is None:
                continue
            if (
                moved
                or (latched.proof is Proof.ZRTP_HELLO and rehashed)
                or (
                    latched.proof is Proof.SDP_ADDRESS and latched.address != self.expected[channel]
                )
            ):
                self.latched[channel] = None
                dropped = True
        return dropped

    def credentials(self, ours: IceCredentials | None, receiver: IceCredentials | None) -> None:
        """ICE credentials of this leg's phone and of the phone it believes it talks
        to (the other leg's): its checks name ``receiver:ours`` and are keyed with
        the receiver's password."""
        self.stun = (f"{receiver.ufrag}:{ours.ufrag}", receiver.pwd) if ours and receiver else None


def _stun_proves(data: bytes, username: str, key: str) -> bool:
    try:
        return StunRequest.parse(data).proves(username, key)
    except ParseError:
        return False
