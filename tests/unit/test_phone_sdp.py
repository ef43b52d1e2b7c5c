"""The phone's codec choice from the peer's SDP (RFC 3264 sections 6.1 and 7)."""

from __future__ import annotations

import pytest
from quietwire.phone.audio import CODECS, OPUS, PCMA, PCMU
from quietwire.phone.sdp import LocalDescription, NoCommonCodec, describe, remote_of


def sdp(*formats: tuple[int, str | None]) -> bytes:
    rtpmaps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in formats if name)
    return (
        "v=0\r\no=peer 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
        f"m=audio 7078 RTP/AVP {' '.join(str(pt) for pt, _ in formats)}\r\n{rtpmaps}"
    ).encode()


def test_we_offer_opus_first() -> None:
    assert CODECS[0] == OPUS
    offer = describe("192.0.2.1", 4000, "1.10 " + "ab" * 32).decode()
    assert "m=audio 4000 RTP/AVP 96 0 8 101\r\n" in offer


def test_the_peers_order_wins_among_the_codecs_we_have() -> None:
    # Linphone's default offer: Opus on 96 first, then codecs we lack, then PCMU.
    linphone = sdp((96, "opus/48000/2"), (97, "speex/16000"), (0, "PCMU/8000"), (8, "PCMA/8000"))
    assert remote_of(linphone).codec == OPUS
    # An offer of PCMU first is answered in PCMU, even though we prefer Opus.
    assert remote_of(sdp((0, None), (111, "OPUS/48000/2"))).codec == PCMU


def test_dynamic_payload_type_is_the_peers() -> None:
    remote = remote_of(sdp((98, "speex/8000"), (111, "opus/48000/2"), (8, None)))
    assert (remote.codec.name, remote.codec.payload_type) == ("opus", 111)
    assert remote.address == "192.0.2.7" and remote.port == 7078


def test_static_types_need_no_rtpmap_and_unlisted_rtpmaps_are_ignored() -> None:
    assert remote_of(sdp((8, None), (0, None))).codec == PCMA
    offer = sdp((97, "speex/16000")) + b"a=rtpmap:96 opus/48000/2\r\n"
    with pytest.raises(NoCommonCodec):
        remote_of(offer)


def test_our_sdp_keeps_its_session_and_raises_its_version_only_on_change() -> None:
    # RFC 3264 section 8: same o= session id; the version goes up by one when
    # the description changes, and a repeat is the same bytes.
    local = LocalDescription("192.0.2.1", 4000, "1.10 " + "ab" * 32)
    offer = local.describe()
    narrowed = local.describe((PCMU,))
    again = local.describe((PCMU,))
    session, version = offer.split(b"\r\n")[1].split()[1:3]
    assert narrowed.split(b"\r\n")[1].split()[1:3] == [session, str(int(version) + 1).encode()]
    assert again == narrowed
    assert b"m=audio 4000 RTP/AVP 0 101\r\n" in narrowed
