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
- on RTCP: the host whose RTP latched (its RTCP port may be translated apart);
- on a leg carried from another relay (a call's migration, issue 15): a packet
  from where that relay had latched the phone **and** carrying one of the SSRCs
  the phone sent with there. From that address a packet with another SSRC
  proves nothing but a Hello or an ICE check would (the address alone may
  have passed to someone else behind the same NAT while the call moved).

A STUN-shaped packet without integrity proves nothing (any 20 bytes can look
like one). A new SDP address or ``a=zrtp-hash`` re-checks the latches: those
whose proof no longer holds are dropped, and the leg learns again.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
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
    CARRIED = "carried"


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


def source_ssrc(kind: PacketKind, data: bytes) -> bytes:
    """The SSRC a packet names (empty if none): RTP's at bytes 8-11 (RFC 3550
    section 5.1), the sender's of RTCP at 4-7 (section 6.4), ZRTP's Source
    Identifier at 8-11 (RFC 6189 section 5, the SSRC of the phone's RTP)."""
    if kind is PacketKind.RTP or kind is PacketKind.ZRTP:
        return data[8:12]
    if kind is PacketKind.RTCP:
        return data[4:8]
    return b""


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
    #: A leg carried from another relay: where it had latched the phone, per channel,
    #: and the SSRCs (4 bytes each) the phone sent with there.
    carried: dict[Channel, Address | None] = field(default_factory=lambda: dict.fromkeys(Channel))
    carried_ssrcs: frozenset[bytes] = frozenset()

    def address(self, channel: Channel) -> Address | None:
        """Where the phone is on ``channel``, if it proved it: the only destination."""
        latched = self.latched[channel]
        return latched.address if latched is not None else None

    def accept(self, channel: Channel, kind: PacketKind, source: Address, data: bytes) -> Decision:
        """What to do with a packet from ``source`` on ``channel``; changes nothing."""
        latched = self.latched[channel]
        if latched is not None:
            return ACCEPT if source == latched.address else DROP
        if source == self.carried[channel]:
            proof = self._carried_proof(kind, data)
        else:
            proof = self._proof(channel, kind, source, data)
        if proof is None or not self.policy.permits(source[0]):
            return DROP
        return Decision(Verdict.LATCH, proof)

    def _carried_proof(self, kind: PacketKind, data: bytes) -> Proof | None:
        """From the carried address: a carried SSRC, else only what proves anywhere."""
        if source_ssrc(kind, data) in self.carried_ssrcs:
            return Proof.CARRIED
        return self._secret_proof(kind, data)

    def _secret_proof(self, kind: PacketKind, data: bytes) -> Proof | None:
        """What only the phone can send: the Hello its SDP's hash names, an ICE check
        keyed with the password of the phone it talks to."""
        if kind is PacketKind.ZRTP and self.zrtp_hash and hello_hash(data) == self.zrtp_hash:
            return Proof.ZRTP_HELLO
        if kind is PacketKind.STUN and self.stun is not None and _stun_proves(data, *self.stun):
            return Proof.STUN_INTEGRITY
        return None

    def _proof(
        self, channel: Channel, kind: PacketKind, source: Address, data: bytes
    ) -> Proof | None:
        if source == self.expected[channel]:
            return Proof.SDP_ADDRESS
        secret = self._secret_proof(kind, data)
        if secret is not None:
            return secret
        if kind is PacketKind.RTP and self.ssrc and data[8:12] == self.ssrc:
            return Proof.SSRC
        rtp = self.latched[Channel.RTP]
        if channel is Channel.RTCP and rtp is not None and source[0] == rtp.address[0]:
            return Proof.BESIDE_RTP
        return None

    def latch(self, channel: Channel, source: Address, proof: Proof) -> None:
        self.latched[channel] = Latched(source, proof)

    def carry(self, rtp: Address | None, rtcp: Address | None, ssrcs: Iterable[int]) -> None:
        """The leg comes from another relay, which had latched its phone at ``rtp`` and
        ``rtcp`` (None: that channel never latched there) and seen it send with
        ``ssrcs``. Nothing is latched yet: the first packet from there that carries
        one of them latches (and media goes nowhere before, as on any leg). The
        address policy applies as to an SDP address; without an SSRC the carried
        addresses prove nothing."""
        self.carried = {Channel.RTP: self.policy.peer(rtp), Channel.RTCP: self.policy.peer(rtcp)}
        self.carried_ssrcs = frozenset(ssrc.to_bytes(4, "big") for ssrc in ssrcs)

    def expect(self, rtp: Address | None, rtcp: Address | None, zrtp_hash: str) -> bool:
        """The leg's SDP (an offer, an answer, a re-INVITE); whether a latch was dropped.

        A phone that moved (a new RTP address in place of another) learns again;
        otherwise each latch is re-checked against what the SDP now says."""
        moved = self.expected[Channel.RTP] not in (None, rtp)
        if moved:  # where the last relay saw it is no proof of where it is now
            self.carried = dict.fromkeys(Channel)
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
