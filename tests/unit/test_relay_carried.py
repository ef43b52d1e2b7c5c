"""The latch decision of a leg carried from another relay (a call's migration, issue
15): the phone's ongoing SRTP from where the old relay latched it, with an SSRC it
sent there, latches; the same address with another SSRC, or the SSRC from elsewhere,
does not. And what a leg remembers of its phone for the next relay."""

from __future__ import annotations

import socket

from quietwire.relay.addresses import AddressPolicy
from quietwire.relay.latch import Channel, Latch, Proof, Verdict
from quietwire.relay.legs import Event, EventKind, Leg, Side
from quietwire.relay.ports import PortPair
from quietwire.runtime.legmemory import MAX_SSRCS, LegMemory

from tests.unit.test_relay_latch import (
    CALLEE_ICE,
    CALLER_ICE,
    HELLO,
    HELLO_HASH,
    PHONE,
    STRANGER,
    decide,
    rtp,
    stun_check,
)

PHONE_RTCP = (PHONE[0], PHONE[1] + 1)
SSRC, OTHER_SSRC = 0xCA11, 0xBAD
#: Behind the phone's NAT, another device that got the phone's old mapping.
NEIGHBOUR = PHONE


def srtcp(ssrc: int) -> bytes:
    """A sender report's header (RFC 3550 section 6.4.1): the sender's SSRC at bytes 4-7."""
    return b"\x80\xc8\x00\x06" + ssrc.to_bytes(4, "big") + bytes(24)


def zrtp(ssrc: int, block: bytes = b"Commit  ") -> bytes:
    """A ZRTP packet (not a Hello) from the source ``ssrc`` (RFC 6189 section 5)."""
    packet = bytearray(HELLO)
    packet[8:12] = ssrc.to_bytes(4, "big")
    packet[16:24] = block
    return bytes(packet)


def carried_latch(**settings: str) -> Latch:
    latch = Latch(AddressPolicy(), **settings)
    latch.carry(PHONE, PHONE_RTCP, [SSRC, 0xF00D])
    return latch


def test_the_carried_address_with_a_carried_ssrc_latches() -> None:
    """RTP, SRTCP on the RTCP port, and ZRTP (its Source Identifier) alike."""
    latch = carried_latch()
    for data, channel, source in (
        (rtp(ssrc=SSRC), Channel.RTP, PHONE),
        (rtp(ssrc=0xF00D), Channel.RTP, PHONE),
        (zrtp(SSRC), Channel.RTP, PHONE),
        (srtcp(SSRC), Channel.RTCP, PHONE_RTCP),
    ):
        decision = decide(latch, data, source, channel)
        assert (decision.verdict, decision.proof) == (Verdict.LATCH, Proof.CARRIED)


def test_the_carried_address_with_another_ssrc_is_refused() -> None:
    """Another device behind the phone's NAT holding its old port, or the phone's
    own SDP naming that address: the SSRC must be one the phone sent with."""
    latch = carried_latch()
    latch.expect(PHONE, None, "")  # the phone's answer names the same address
    for data, channel, source in (
        (rtp(ssrc=OTHER_SSRC), Channel.RTP, NEIGHBOUR),
        (zrtp(OTHER_SSRC), Channel.RTP, NEIGHBOUR),
        (srtcp(OTHER_SSRC), Channel.RTCP, PHONE_RTCP),
        (bytes(20), Channel.RTP, NEIGHBOUR),
        (stun_check("guess:guess", "k" * 22), Channel.RTP, NEIGHBOUR),
        (rtp(ssrc=SSRC)[:10], Channel.RTP, NEIGHBOUR),  # cut short of its SSRC
    ):
        assert decide(latch, data, source, channel).verdict is Verdict.DROP


def test_a_carried_ssrc_from_elsewhere_proves_nothing() -> None:
    latch = carried_latch()
    for data, channel in ((rtp(ssrc=SSRC), Channel.RTP), (srtcp(SSRC), Channel.RTCP)):
        assert decide(latch, data, STRANGER, channel).verdict is Verdict.DROP
    assert decide(latch, rtp(ssrc=SSRC), (PHONE[0], PHONE[1] + 2)).verdict is Verdict.DROP


def test_hello_or_ice_still_prove_the_phone_anywhere() -> None:
    """A phone that changed SSRC, or moved behind its NAT, proves itself as on any leg."""
    latch = carried_latch(zrtp_hash=HELLO_HASH.split()[1])
    latch.credentials(CALLER_ICE, CALLEE_ICE)
    for source in (PHONE, STRANGER):
        assert decide(latch, HELLO, source).proof is Proof.ZRTP_HELLO
        assert decide(latch, stun_check("WxYz:AbCd", CALLEE_ICE.pwd), source).proof is (
            Proof.STUN_INTEGRITY
        )
    latch.expect(STRANGER, None, "")  # an SDP address elsewhere proves as always
    assert decide(latch, rtp(ssrc=OTHER_SSRC), STRANGER).proof is Proof.SDP_ADDRESS


def test_what_the_carried_leg_does_not_prove() -> None:
    """No SSRC carried: the address alone proves nothing. An address the policy
    refuses is never carried. A phone whose SDP then moves forgets the carried one."""
    latch = Latch(AddressPolicy())
    latch.carry(PHONE, None, [])
    assert decide(latch, rtp(ssrc=SSRC), PHONE).verdict is Verdict.DROP

    latch = Latch(AddressPolicy())
    latch.carry(("127.0.0.1", 4000), None, [SSRC])
    assert latch.carried[Channel.RTP] is None
    assert decide(latch, rtp(ssrc=SSRC), ("127.0.0.1", 4000)).verdict is Verdict.DROP

    latch = carried_latch()
    latch.expect(STRANGER, None, "")
    assert not latch.expect(("198.51.100.200", 7000), None, "")
    assert decide(latch, rtp(ssrc=SSRC), PHONE).verdict is Verdict.DROP


def test_a_carried_latch_holds_and_takes_its_source_only() -> None:
    latch = carried_latch()
    latch.latch(Channel.RTP, PHONE, Proof.CARRIED)
    assert not latch.expect(PHONE, None, HELLO_HASH)  # the answer and its hash keep it
    assert decide(latch, rtp(ssrc=OTHER_SSRC), PHONE).verdict is Verdict.ACCEPT
    assert decide(latch, rtp(ssrc=SSRC), STRANGER).verdict is Verdict.DROP


def test_a_leg_remembers_what_it_carried_and_what_it_saw() -> None:
    """The next relay learns both: the phone's address here, every SSRC (capped),
    the ZRTP seen before and here."""
    carried = LegMemory(STRANGER, None, (SSRC,), "ab" * 32, ("Hello", "Conf2ACK"))
    with socket.socket(type=socket.SOCK_DGRAM) as one, socket.socket(type=socket.SOCK_DGRAM) as two:
        leg = Leg(Side.CALLER, PortPair(one, two, 0), carried_latch(), carried=carried)
        assert leg.memory() == carried
        leg.latch.latch(Channel.RTP, PHONE, Proof.CARRIED)
        assert leg.saw_ssrc(SSRC.to_bytes(4, "big"))
        assert not leg.saw_ssrc(SSRC.to_bytes(4, "big"))
        assert not leg.saw_ssrc(b"\x01")  # a packet too short to name one
        for n in range(1, MAX_SSRCS + 2):
            leg.saw_ssrc(n.to_bytes(4, "big"))
        leg.stats.zrtp_seen["GoClear"] = Event("c", Side.CALLER, EventKind.ZRTP_MESSAGE)
    assert len(leg.ssrcs) == MAX_SSRCS
    assert leg.memory() == LegMemory(
        PHONE, None, (SSRC, 1, 2, 3), "ab" * 32, ("Hello", "Conf2ACK", "GoClear")
    )
