"""ICE in SDP (RFC 8839): the credentials the relay needs, from the SDP to the relay's
Update, and candidates rewritten toward the relay."""

from __future__ import annotations

import pytest
from quietwire.keyagreement.servicer import media_of
from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.protocols.sdp import ice
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.signaling.media import describe, rewrite

UFRAG, PWD = "8hhY", "asd88fgpdd777uzjYhagZg"
# Shaped like RFC 8839 section 7's example: session-level credentials, two
# components, a server-reflexive candidate that names the phone's NAT.
OFFER = (
    "v=0\r\n"
    "o=jdoe 2890844526 2890842807 IN IP4 203.0.113.141\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.3\r\n"
    "t=0 0\r\n"
    f"a=ice-pwd:{PWD}\r\n"
    f"a=ice-ufrag:{UFRAG}\r\n"
    "m=audio 45664 RTP/AVP 0\r\n"
    "b=RS:0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=zrtp-hash:1.10 " + "cd" * 32 + "\r\n"
    "a=candidate:1 1 UDP 2130706431 203.0.113.141 8998 typ host\r\n"
    "a=candidate:1 2 UDP 2130706430 203.0.113.141 8999 typ host\r\n"
    "a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 203.0.113.141 rport 8998\r\n"
    "a=candidate:2 2 UDP 1694498814 192.0.2.3 45665 typ srflx raddr 203.0.113.141 rport 8999\r\n"
    "a=remote-candidates:1 192.0.2.9 5000\r\n"
)
PLAN = pb.Plan(
    accepted=True,
    media=[
        pb.MediaPlan(
            toward_caller=pb.RelayEndpoint(host="198.51.100.7", rtp_port=30000, rtcp_port=30001),
            toward_callee=pb.RelayEndpoint(host="198.51.100.7", rtp_port=30002, rtcp_port=30003),
        )
    ],
)


def test_session_level_credentials_apply_to_each_stream() -> None:
    sdp = SessionDescription.parse(OFFER)
    assert ice.credentials(sdp, sdp.media[0]) == IceCredentials(UFRAG, PWD)


def test_media_level_credentials_win() -> None:
    sdp = SessionDescription.parse(OFFER)
    sdp.media[0].lines.append(("a", "ice-ufrag:MEDIA"))
    sdp.media[0].lines.append(("a", "ice-pwd:" + "m" * 22))
    assert ice.credentials(sdp, sdp.media[0]) == IceCredentials("MEDIA", "m" * 22)


@pytest.mark.parametrize(
    ("ufrag", "pwd"),
    [
        (UFRAG, None),  # a ufrag alone
        ("abc", PWD),  # under 4 characters
        (UFRAG, "tooshort"),  # under 22
        ("ab:c", PWD),  # ':' would split the STUN USERNAME
        (UFRAG, "x" * 257),
    ],
)
def test_credentials_off_the_grammar_are_none(ufrag: str, pwd: str | None) -> None:
    text = OFFER.replace(f"a=ice-ufrag:{UFRAG}", f"a=ice-ufrag:{ufrag}")
    text = text.replace(f"a=ice-pwd:{PWD}\r\n", f"a=ice-pwd:{pwd}\r\n" if pwd else "")
    sdp = SessionDescription.parse(text)
    assert ice.credentials(sdp, sdp.media[0]) is None


def test_no_ice_no_credentials() -> None:
    sdp = SessionDescription.parse(OFFER.replace("a=ice-", "a=x-ice-"))
    assert ice.credentials(sdp, sdp.media[0]) is None
    assert describe(sdp)[0].ice_ufrag == ""


def test_credentials_reach_keyagreement_and_its_relay_update() -> None:
    """signaling describes them; keyagreement's servicer turns them into the domain's."""
    described = describe(SessionDescription.parse(OFFER))
    assert (described[0].ice_ufrag, described[0].ice_pwd) == (UFRAG, PWD)
    assert media_of(described)[0].ice == IceCredentials(UFRAG, PWD)
    assert "asd88" not in repr(media_of(described)[0])  # the password stays out of logs
    assert media_of([pb.MediaDescription(port=1, ice_ufrag=UFRAG)])[0].ice is None


def test_rewritten_offer_names_only_the_relay_and_keeps_the_credentials() -> None:
    """The callee's phone checks the relay leg facing it, keyed with the caller's
    password: the credentials pass unchanged, the caller's addresses do not."""
    out = rewrite(SessionDescription.parse(OFFER), PLAN, toward_caller=False).decode()
    media = out[out.index("m=") :]
    assert "203.0.113.141" not in media and "192.0.2.3" not in media
    assert "remote-candidates" not in media
    sdp = SessionDescription.parse(out)
    assert sdp.media[0].attributes("candidate") == [
        f"{ice.FOUNDATION} 1 UDP 2130706431 198.51.100.7 30002 typ host",
        f"{ice.FOUNDATION} 2 UDP 2130706430 198.51.100.7 30003 typ host",
    ]
    assert ice.credentials(sdp, sdp.media[0]) == IceCredentials(UFRAG, PWD)
    assert sdp.media[0].port == 30002 and sdp.media[0].rtcp_port == 30003


def test_rtcp_mux_stream_gets_one_candidate_and_plain_streams_none() -> None:
    muxed = SessionDescription.parse(OFFER.replace("b=RS:0\r\n", "a=rtcp-mux\r\n"))
    out = SessionDescription.parse(rewrite(muxed, PLAN, toward_caller=True))
    assert out.media[0].attributes("candidate") == [
        f"{ice.FOUNDATION} 1 UDP 2130706431 198.51.100.7 30000 typ host"
    ]
    plain = OFFER.replace("a=candidate", "a=x-candidate").replace("a=remote", "a=x-remote")
    out = SessionDescription.parse(rewrite(SessionDescription.parse(plain), PLAN, True))
    assert not out.media[0].has_attribute("candidate")


def test_host_priority_follows_rfc_8445() -> None:
    # (2^24)*126 + (2^8)*65535 + (256 - component), section 5.1.2.1
    assert ice.priority(1) == 2130706431 and ice.priority(2) == 2130706430
