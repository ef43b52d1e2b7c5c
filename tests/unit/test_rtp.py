"""RTP/RTCP/SRTP: one-port demultiplexing (RFC 7983) and SRTP keyed from ZRTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.errors import ParseError
from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.rtp.srtp import SrtpContext, SrtpError

from tests.unit.zrtp.harness import pair

VECTORS = Path(__file__).parents[1] / "vectors" / "data" / "bzrtp_exchange.json"
ZRTP_HELLO = bytes.fromhex(json.loads(VECTORS.read_text())["packets"][0]["hex"])
# A 20-byte STUN Binding Request as Linphone sends to the peer's RTP port (RFC 5389).
STUN = bytes.fromhex("0001000021120000") + bytes(12)
DTLS_CLIENT_HELLO = bytes.fromhex("16fefd00000000000000000080")
RTCP_SR = bytes.fromhex("80c8000612345678") + bytes(20)


def test_classify() -> None:
    rtp = Rtp(0, 1, 160, 0x1234, b"\xff" * 160).serialize()
    assert classify(ZRTP_HELLO) is PacketKind.ZRTP
    assert classify(STUN) is PacketKind.STUN
    assert classify(DTLS_CLIENT_HELLO) is PacketKind.DTLS
    assert classify(rtp) is PacketKind.RTP
    assert classify(RTCP_SR) is PacketKind.RTCP
    assert classify(b"") is PacketKind.UNKNOWN
    assert classify(b"\x10\x00\x00\x01XXXX") is PacketKind.UNKNOWN  # ZRTP range, no cookie
    assert classify(b"\xff" * 12) is PacketKind.UNKNOWN


def test_rtp_round_trip_and_garbage() -> None:
    packet = Rtp(8, 65535, 2**32 - 1, 0xCAFEBABE, b"abc", marker=True)
    assert Rtp.parse(packet.serialize()) == packet
    with pytest.raises(ParseError):
        Rtp.parse(b"\x80\x00")


@pytest.fixture
def contexts() -> tuple[SrtpContext, SrtpContext]:
    p = pair()
    p.alice.engine.start()
    p.bob.engine.start()
    p.run()
    a, b = p.alice.engine.srtp, p.bob.engine.srtp
    assert a is not None and b is not None
    return SrtpContext(a.keying()), SrtpContext(b.keying())


def test_srtp_between_zrtp_peers(contexts: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = contexts
    for seq in range(5):
        rtp = Rtp(0, seq, seq * 160, 0x1111, bytes([seq]) * 160).serialize()
        srtp = alice.protect(rtp)
        assert srtp != rtp and len(srtp) > len(rtp)
        assert bob.unprotect(srtp) == rtp
    reply = Rtp(0, 9, 0, 0x2222, b"hello").serialize()
    assert alice.unprotect(bob.protect(reply)) == reply
    assert bob.unprotect_rtcp(alice.protect_rtcp(RTCP_SR)) == RTCP_SR


def test_srtp_refuses_tampering_and_replay(contexts: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = contexts
    srtp = alice.protect(Rtp(0, 7, 0, 0x1111, b"x" * 40).serialize())
    tampered = bytearray(srtp)
    tampered[20] ^= 1
    with pytest.raises(SrtpError):
        bob.unprotect(bytes(tampered))
    bob.unprotect(srtp)
    with pytest.raises(SrtpError):
        bob.unprotect(srtp)
    with pytest.raises(SrtpError):
        alice.unprotect(srtp)  # our own packet, with the peer's key: no
