"""SDP: exact round trips, typed access to what the platform reads, and rewriting."""

from __future__ import annotations

import pytest
from quietwire.protocols.sdp.session import Connection, ParseError, SessionDescription

from tests.vectors.rfc4475 import sdp

# Shaped like Linphone 5.1's offer (INTEROP.md): RTP/AVP with a media-level zrtp-hash.
LINPHONE_OFFER = (
    b"v=0\r\n"
    b"o=alice 3457 1289 IN IP4 127.0.0.1\r\n"
    b"s=Talk\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    b"a=record:off\r\n"
    b"m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1\r\n"
    b"a=rtpmap:97 speex/16000\r\n"
    b"a=rtpmap:101 telephone-event/48000\r\n"
    b"a=rtcp:7079\r\n"
    b"a=zrtp-hash:1.10 13e9f407367895861f0eee6707ba30aca05a0ad9997625e9279ad5d08485aa9d\r\n"
    b"a=rtcp-fb:* trr-int 1000\r\n"
)


def test_linphone_offer_round_trip_and_values() -> None:
    parsed = SessionDescription.parse(LINPHONE_OFFER)
    assert parsed.serialize() == LINPHONE_OFFER
    (audio,) = parsed.media
    assert (audio.media, audio.port, audio.protocol) == ("audio", 7078, "RTP/AVP")
    assert audio.formats[:3] == ["96", "97", "98"]
    assert audio.rtcp_port == 7079
    assert not audio.rtcp_mux
    assert audio.zrtp_hash == (
        "1.10 13e9f407367895861f0eee6707ba30aca05a0ad9997625e9279ad5d08485aa9d"
    )
    assert parsed.media_connection(audio) == Connection("127.0.0.1")
    assert audio.direction == "sendrecv"
    assert parsed.attributes("record") == ["off"]


def test_rewrite_toward_a_relay() -> None:
    parsed = SessionDescription.parse(LINPHONE_OFFER)
    audio = parsed.media[0]
    audio.port = 30000
    audio.set_connection(Connection("198.51.100.10"))
    audio.set_attribute("rtcp", "30001")
    again = SessionDescription.parse(parsed.serialize())
    (moved,) = again.media
    assert moved.port == 30000 and moved.rtcp_port == 30001
    assert again.media_connection(moved) == Connection("198.51.100.10")
    assert again.connection == Connection("127.0.0.1")
    assert moved.zrtp_hash is not None


def test_sdes_and_fingerprint() -> None:
    text = "\r\n".join(
        [
            *sdp("192.0.2.1")[:5],
            "m=audio 4000 RTP/SAVP 0",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
            + "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "a=fingerprint:sha-256 AB:CD:EF",
            "a=rtcp-mux",
            "",
        ]
    )
    (audio,) = SessionDescription.parse(text).media
    assert audio.crypto[0].suite == "AES_CM_128_HMAC_SHA1_80"
    assert audio.fingerprints[0].hash_function == "sha-256"
    assert audio.rtcp_mux


def test_rfc4475_body_parses() -> None:
    parsed = SessionDescription.parse("\r\n".join(sdp("192.0.2.3", "192.0.2.4")))
    assert [m.media for m in parsed.media] == ["audio", "video"]
    assert parsed.connection == Connection("192.0.2.4")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x=1\r\n",
        "v=0\r\nm=audio nope RTP/AVP 0\r\n",
        "v=0\r\nm=audio\r\n",
        "v=0\r\nbad line\r\n",
        "v=0\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\n",
    ],
)
def test_bad_sdp(text: str) -> None:
    def read_all() -> None:
        parsed = SessionDescription.parse(text)
        for media in parsed.media:
            parsed.media_connection(media)

    with pytest.raises(ParseError):
        read_all()
