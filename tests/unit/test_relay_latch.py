"""The relay's latch decision, address policy, STUN integrity and loss count, as units:
bytes and addresses in, verdicts out, no sockets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from aioice import stun as aioice_stun
from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.errors import ParseError
from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.rtp.stun import IceCredentials, StunRequest
from quietwire.protocols.zrtp.packet import ZrtpPacket
from quietwire.relay.addresses import AddressPolicy, networks
from quietwire.relay.latch import Channel, Latch, Proof, Verdict
from quietwire.relay.legs import LegStats
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.settings import SettingsError, load_settings

VECTORS = Path(__file__).parents[1] / "vectors" / "data" / "bzrtp_exchange.json"
HELLO = bytes.fromhex(json.loads(VECTORS.read_text())["packets"][0]["hex"])
HELLO_HASH = "1.10 " + hashlib.sha256(ZrtpPacket.parse(HELLO).message).hexdigest()
#: RFC 5769 section 2.1: a sample request, USERNAME "evtj:h6vY", password below.
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573742063"
    "6c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a6836"
    "765920202000080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"
)
RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
PHONE, STRANGER, SDP = ("198.51.100.7", 4000), ("203.0.113.66", 5000), ("198.51.100.7", 4000)
CALLER_ICE = IceCredentials("AbCd", "caller-password-0123456789")
CALLEE_ICE = IceCredentials("WxYz", "callee-password-0123456789")


def stun_check(username: str, key: str, *, cookie: bool = True) -> bytes:
    """An ICE connectivity check built by aioice (an independent implementation)."""
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.add_message_integrity(key.encode())
    message.add_fingerprint()
    data = bytes(message)
    return data if cookie else data[:4] + b"\x00\x00\x00\x00" + data[8:]


def rtp(ssrc: int = 0xA1, sequence: int = 1) -> bytes:
    return Rtp(0, sequence, 0, ssrc, b"x" * 160).serialize()


def decide(latch: Latch, data: bytes, source: tuple[str, int], channel: Channel = Channel.RTP):
    before = (dict(latch.expected), dict(latch.latched), latch.ssrc)
    decision = latch.accept(channel, classify(data), source, data)
    assert (dict(latch.expected), dict(latch.latched), latch.ssrc) == before  # pure
    return decision


def test_nothing_but_proof_latches() -> None:
    """Before the answer a leg knows no address: 20 bytes shaped like STUN, RTP and a
    STUN request without ICE credentials all prove nothing."""
    latch = Latch(AddressPolicy())
    for data in (bytes(20), b"\x00\x01" + bytes(18), rtp(), stun_check("a:b", "k" * 22)):
        assert decide(latch, data, STRANGER).verdict is Verdict.DROP


def test_the_sdp_address_proves_unless_the_policy_refuses_it() -> None:
    latch = Latch(AddressPolicy())
    latch.expect(SDP, None, "")
    decision = decide(latch, rtp(), SDP)
    assert (decision.verdict, decision.proof) == (Verdict.LATCH, Proof.SDP_ADDRESS)
    assert decide(latch, rtp(), STRANGER).verdict is Verdict.DROP
    assert latch.expected[Channel.RTCP] == (SDP[0], SDP[1] + 1)
    for refused in (("127.0.0.1", 4000), ("localhost", 4000), ("169.254.0.9", 4000)):
        latch = Latch(AddressPolicy())
        latch.expect(refused, None, "")
        assert latch.expected[Channel.RTP] is None
        assert decide(latch, rtp(), refused).verdict is Verdict.DROP


def test_a_matching_zrtp_hello_proves_a_forged_one_does_not() -> None:
    latch = Latch(AddressPolicy(), zrtp_hash=HELLO_HASH.split()[1])
    forged = bytearray(HELLO)
    forged[60] ^= 1
    assert decide(latch, bytes(forged), STRANGER).verdict is Verdict.DROP
    decision = decide(latch, HELLO, PHONE)
    assert (decision.verdict, decision.proof) == (Verdict.LATCH, Proof.ZRTP_HELLO)
    assert decide(Latch(AddressPolicy()), HELLO, PHONE).verdict is Verdict.DROP  # no hash


def test_stun_proves_only_with_ice_integrity_and_the_magic_cookie() -> None:
    """The caller's checks go to "the callee": USERNAME callee:caller, keyed with the
    callee's password (RFC 8445 section 7.2.2)."""
    latch = Latch(AddressPolicy())
    latch.credentials(CALLER_ICE, CALLEE_ICE)
    good = stun_check("WxYz:AbCd", CALLEE_ICE.pwd)
    decision = decide(latch, good, PHONE)
    assert (decision.verdict, decision.proof) == (Verdict.LATCH, Proof.STUN_INTEGRITY)
    for bad in (
        stun_check("WxYz:AbCd", "a-guessed-password-0123"),
        stun_check("WxYz:Evil", CALLEE_ICE.pwd),
        stun_check("WxYz:AbCd", CALLEE_ICE.pwd, cookie=False),
        good[:-8],  # cut: lengths disagree
    ):
        assert decide(latch, bad, STRANGER).verdict is Verdict.DROP
    latch.credentials(CALLER_ICE, None)  # the other phone's credentials unknown
    assert decide(latch, good, PHONE).verdict is Verdict.DROP


def test_a_latched_channel_takes_its_source_only() -> None:
    latch = Latch(AddressPolicy())
    latch.latch(Channel.RTP, PHONE, Proof.ZRTP_HELLO)
    assert decide(latch, rtp(), PHONE).verdict is Verdict.ACCEPT
    assert decide(latch, HELLO, STRANGER).verdict is Verdict.DROP
    rtcp_port = (PHONE[0], 40001)  # RTCP from the host whose RTP latched
    decision = decide(latch, b"\x80\xc8" + bytes(26), rtcp_port, Channel.RTCP)
    assert decision.proof is Proof.BESIDE_RTP
    assert decide(latch, b"\x80\xc8" + bytes(26), STRANGER, Channel.RTCP).proof is None


def test_an_answer_rechecks_earlier_latches() -> None:
    """An SDP address that no longer names the latched source drops that latch; a
    Hello-proven latch holds through an answer, not through a new a=zrtp-hash; a
    phone that moved learns again and its SSRC proves it."""
    latch = Latch(AddressPolicy(), zrtp_hash=HELLO_HASH.split()[1])
    latch.latch(Channel.RTP, PHONE, Proof.ZRTP_HELLO)
    assert not latch.expect(("198.51.100.9", 6000), None, HELLO_HASH)
    assert latch.address(Channel.RTP) == PHONE
    assert latch.expect(("198.51.100.9", 6000), None, "1.10 " + "ab" * 32)
    assert latch.address(Channel.RTP) is None

    latch = Latch(AddressPolicy())
    latch.latch(Channel.RTCP, STRANGER, Proof.SDP_ADDRESS)
    assert latch.expect(SDP, None, "") and latch.address(Channel.RTCP) is None

    latch = Latch(AddressPolicy())
    latch.expect(SDP, None, "")
    latch.latch(Channel.RTP, SDP, Proof.SDP_ADDRESS)
    latch.ssrc = rtp()[8:12]
    assert latch.expect(("198.51.100.200", 7000), None, "")  # moved: learn again
    assert decide(latch, rtp(ssrc=0xBAD), STRANGER).verdict is Verdict.DROP
    assert decide(latch, rtp(), STRANGER).proof is Proof.SSRC


def test_another_phone_taking_a_leg_over_is_not_proven_by_the_first_ones_ssrc() -> None:
    """A forked call: the winning callee's answer (another address, another
    a=zrtp-hash) takes over the leg an early answer latched. The first phone's
    RTP, still in flight, proves nothing by its SSRC; the new phone's address does."""
    latch = Latch(AddressPolicy(), zrtp_hash=HELLO_HASH.split()[1])
    latch.expect(SDP, None, HELLO_HASH)
    latch.latch(Channel.RTP, SDP, Proof.SDP_ADDRESS)
    latch.ssrc = rtp()[8:12]
    assert latch.expect(("198.51.100.200", 7000), None, "1.10 " + "ab" * 32)
    assert decide(latch, rtp(), SDP).verdict is Verdict.DROP
    assert decide(latch, rtp(), ("198.51.100.200", 7000)).proof is Proof.SDP_ADDRESS


REFUSED = ("127.0.0.1", "::1", "169.254.1.1", "fe80::1", "224.0.0.1", "ff02::1", "::")
NOT_LITERALS = ("localhost", "example.com", "", "10.0.0.1 ")


@pytest.mark.parametrize(
    "host",
    [*REFUSED, "0.0.0.0", "255.255.255.255", "::ffff:127.0.0.1", *NOT_LITERALS],  # noqa: S104
)
def test_policy_refuses_by_default(host: str) -> None:
    assert not AddressPolicy().permits(host)


def test_policy_allow_and_deny() -> None:
    assert AddressPolicy().permits("198.51.100.7") and AddressPolicy().permits("10.1.2.3")
    loopback = AddressPolicy(networks("127.0.0.0/8, ::1"))
    assert loopback.permits("127.0.0.1") and loopback.permits("::1")
    assert not loopback.permits("localhost") and not loopback.permits("169.254.1.1")
    platform = AddressPolicy(networks("10.0.0.0/8"), networks("10.96.0.0/12"))
    assert platform.permits("10.1.2.3") and not platform.permits("10.96.0.10")


def test_peer_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QW_RELAY_PEER_ALLOW", "QW_RELAY_PEER_DENY"):
        monkeypatch.setenv("QW_GRPC_INSECURE", "true")
        monkeypatch.setenv(name, "127.0.0.0/8,nonsense")
        with pytest.raises(SettingsError, match=name):
            load_settings(RelaySettings)
        monkeypatch.delenv(name)
    monkeypatch.setenv("QW_RELAY_PEER_ALLOW", "127.0.0.0/8")
    assert load_settings(RelaySettings).peer_policy.permits("127.0.0.1")


def test_stun_integrity_against_rfc5769() -> None:
    request = StunRequest.parse(RFC5769_REQUEST)
    assert request.username == "evtj:h6vY"
    assert request.proves("evtj:h6vY", RFC5769_PASSWORD)
    assert not request.proves("evtj:h6vY", RFC5769_PASSWORD[:-1])
    for broken in (RFC5769_REQUEST[:19], b"\x01\x01" + RFC5769_REQUEST[2:], bytes(20)):
        with pytest.raises(ParseError):
            StunRequest.parse(broken)
    assert classify(RFC5769_REQUEST) is PacketKind.STUN


def test_one_loss_count_for_both_paths() -> None:
    """Per packet (full path) or per batch ending at a sequence number (fast path):
    skipped numbers are lost, late and repeated ones are not, across the wrap."""
    stats = LegStats()
    for sequence in (65533, 65534, 1, 0, 1, 2):  # 65535 and 0 skipped, 0 comes late
        stats.count_rtp(sequence, 1)
    assert (stats.rtp_packets, stats.rtp_lost, stats.highest_seq) == (6, 2, 2)
    stats.count_rtp(12, 8)  # 8 packets forwarded, the last 12: two of 3..12 missing
    assert (stats.rtp_packets, stats.rtp_lost, stats.highest_seq) == (14, 4, 12)
