"""MoveCall's pure pieces: the re-pointed SDP (RFC 3264 section 8), the outcome of
both phones' answers, and the messages the platform sends as a UAC."""

from __future__ import annotations

from dataclasses import replace

import pytest
from quietwire.protocols.sdp.session import ParseError, SessionDescription
from quietwire.protocols.sip.message import Request, Response, parse_message
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.signaling.dialogs import CSEQ_STEP, Dialog, Leg, Party, Side, our_via
from quietwire.signaling.media import hidden_origin
from quietwire.signaling.migration import (
    MoveOutcome,
    PhoneAnswer,
    moved_sdp,
    retry_wait,
    summary,
)
from quietwire.signaling.sdpversion import continued
from quietwire.signaling.uac import ack_of_2xx, with_cseq

HASH = "1.10 " + "5e" * 32
#: What the callee was last sent: the caller's offer pointed at relay A.
LAST = (
    "v=0\r\n"
    "o=alice 1234 7 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "t=0 0\r\n"
    "m=audio 30000 RTP/AVP 96 0 101\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=rtcp:30001\r\n"
    f"a=zrtp-hash:{HASH}\r\n"
    "m=video 0 RTP/AVP 97\r\n"
).encode()


def endpoint(host: str, rtp: int) -> pb.RelayEndpoint:
    return pb.RelayEndpoint(host=host, rtp_port=rtp, rtcp_port=rtp + 1)


NEW = [
    pb.MediaPlan(
        toward_caller=endpoint("203.0.113.5", 40010), toward_callee=endpoint("203.0.113.5", 40020)
    ),
    pb.MediaPlan(),
]


def test_the_moved_offer_changes_only_the_relay_and_the_version() -> None:
    moved = SessionDescription.parse(moved_sdp(LAST, NEW, toward_caller=False))
    before = SessionDescription.parse(LAST)
    assert moved.connection is not None and moved.connection.address == "203.0.113.5"
    audio, video = moved.media
    assert (audio.port, audio.rtcp_port) == (40020, 40021)
    assert audio.formats == before.media[0].formats
    assert audio.attributes("rtpmap") == before.media[0].attributes("rtpmap")
    assert audio.zrtp_hash == HASH
    assert video.port == 0  # a refused stream stays refused
    origin = dict(moved.lines)["o"]
    # Same session, version + 1 (the address hidden as in every SDP we forward).
    assert origin == hidden_origin("alice 1234 8 IN IP4 192.0.2.10")


def test_the_caller_is_pointed_at_the_leg_that_faces_it() -> None:
    moved = SessionDescription.parse(moved_sdp(LAST, NEW, toward_caller=True))
    assert moved.media[0].port == 40010


def test_an_sdp_without_a_usable_origin_cannot_be_moved() -> None:
    with pytest.raises(ParseError):
        moved_sdp(LAST.replace(b"o=alice 1234 7", b"o=alice 1234 x"), NEW, toward_caller=False)
    with pytest.raises(ParseError):
        moved_sdp(b"", NEW, toward_caller=False)


ACCEPTED = PhoneAnswer(Party.CALLER, 200, "OK", [pb.MediaDescription(port=7078)])


def test_both_phones_accepting_is_a_move_with_both_answers() -> None:
    callee = PhoneAnswer(Party.CALLEE, 200, "OK", [pb.MediaDescription(port=9000)])
    result = summary([ACCEPTED, callee])
    assert result.outcome is MoveOutcome.MOVED
    assert [m.port for m in result.caller_media] == [7078]
    assert [m.port for m in result.callee_media] == [9000]


def test_one_refusal_says_who_refused_and_that_the_other_accepted() -> None:
    result = summary([ACCEPTED, PhoneAnswer(Party.CALLEE, 488, "Not Acceptable Here")])
    assert result.outcome is MoveOutcome.REFUSED
    assert result.sip_status == 488
    assert "the caller accepted" in result.detail
    assert "the callee refused: 488 Not Acceptable Here" in result.detail


def test_a_refusal_outweighs_silence_and_silence_is_no_answer() -> None:
    silent = PhoneAnswer(Party.CALLEE)
    assert summary([ACCEPTED, silent]).outcome is MoveOutcome.NO_ANSWER
    assert "the callee did not answer" in summary([ACCEPTED, silent]).detail
    refused = PhoneAnswer(Party.CALLER, 603, "Decline")
    assert summary([refused, silent]).outcome is MoveOutcome.REFUSED


def test_a_call_that_ended_meanwhile_is_no_such_call() -> None:
    gone = PhoneAnswer(Party.CALLEE, call_gone=True)
    assert summary([ACCEPTED, gone]).outcome is MoveOutcome.NO_SUCH_CALL


DIALOG = Dialog(
    "call-1",
    5,
    Side("r1.1", "<sip:alice@192.0.2.10:5061;transport=tls>", "<sip:alice@d>;tag=a1"),
    Side("r1.2", "<sip:bob@192.0.2.20:5061;transport=tls>", "<sip:bob@d>;tag=b2"),
    Leg(b"", 5, 0),
)


def via(flow_id: str) -> str:
    return our_via("proxy.example", 5061, "r1")


def test_the_platform_invites_a_phone_as_the_other_party() -> None:
    invite = DIALOG.request("INVITE", Party.CALLEE, 7, via)
    assert invite is not None
    assert invite.uri == "sip:bob@192.0.2.20:5061;transport=tls"
    assert invite.from_.tag == "a1" and invite.to.tag == "b2"
    assert str(invite.cseq) == "7 INVITE"
    # The caller's Contact: the callee's requests still reach the caller.
    assert invite.headers.get("Contact") == "<sip:alice@192.0.2.10:5061;transport=tls>"
    assert invite.vias[0].params["qwr"] == "r1"


def test_the_ack_of_a_2xx_is_a_new_request_to_the_2xx_contact() -> None:
    invite = DIALOG.request("INVITE", Party.CALLER, 3, via)
    assert invite is not None
    ok = parse_message(
        (
            "SIP/2.0 200 OK\r\n"
            f"Via: {invite.headers.get('Via')}\r\n"
            "From: <sip:bob@d>;tag=b2\r\nTo: <sip:alice@d>;tag=a1\r\n"
            "Call-ID: call-1\r\nCSeq: 3 INVITE\r\n"
            "Contact: <sip:alice@192.0.2.10:6000;transport=tls>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(ok, Response)
    ack = ack_of_2xx(invite, ok, via("r1.1"))
    assert ack.method == "ACK" and ack.uri == "sip:alice@192.0.2.10:6000;transport=tls"
    assert str(ack.cseq) == "3 ACK"
    assert ack.vias[0].branch != invite.vias[0].branch  # RFC 3261 section 17.1.1.3


def test_with_cseq_keeps_the_method() -> None:
    request = Request(method="BYE", uri="sip:bob@d")
    request.headers.add("CSeq", "3 BYE")
    with_cseq(request, 1_000_004)
    assert str(request.cseq) == "1000004 BYE"


def sdp_with(origin: str, port: int) -> bytes:
    lines = [
        "v=0",
        f"o={origin}",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def version(sdp: bytes) -> int:
    return int(dict(SessionDescription.parse(sdp).lines)["o"].split()[2])


def test_a_phones_sdp_after_a_move_goes_above_what_the_platform_sent() -> None:
    # alice's own next SDP has version 8; bob was sent version 8 by the move.
    moved = sdp_with("alice 1234 8 IN IP4 192.0.2.10", 40020)
    assert version(continued(sdp_with("alice 1234 8 IN IP4 192.0.2.10", 30000), moved)) == 9
    assert version(continued(sdp_with("alice 1234 5 IN IP4 192.0.2.10", 30000), moved)) == 9
    # The same SDP again keeps the version bob knows it by (RFC 3264 section 8).
    assert continued(sdp_with("alice 1234 7 IN IP4 192.0.2.10", 40020), moved) == moved


def test_versions_already_above_or_another_session_pass_unchanged() -> None:
    last = sdp_with("alice 1234 8 IN IP4 192.0.2.10", 40020)
    above = sdp_with("alice 1234 12 IN IP4 192.0.2.10", 30000)
    assert continued(above, last) == above
    other_session = sdp_with("alice 999 1 IN IP4 192.0.2.10", 30000)
    assert continued(other_session, last) == other_session
    assert continued(other_session, b"") == other_session  # nothing sent before
    assert continued(b"not sdp", last) == b"not sdp"


def test_the_platforms_bye_goes_above_what_each_phone_was_forwarded_with() -> None:
    # bob numbers his requests from 2_000_000 and a move raised them by 1.
    moved = replace(DIALOG, callee_leg=Leg(b"", 2_000_000, 1))
    to_bob, to_alice = (bye for _, bye in moved.byes(via, "relay lost"))
    assert to_bob.cseq.number == 5 + CSEQ_STEP  # as alice: above her 5
    assert to_alice.cseq.number == 2_000_002  # as bob: above his 2_000_000 + 1


def answer(status: int, *headers: tuple[str, str]) -> Response:
    response = Response(status=status)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def test_glare_and_a_busy_phone_are_retried_nothing_else() -> None:
    assert retry_wait(answer(491), lambda: 1.25) == 1.25  # RFC 3261 section 14.1
    # Section 14.2: still answering another re-INVITE; its wait, 2 s at most.
    assert retry_wait(answer(500, ("Retry-After", "1"))) == 1.0
    assert retry_wait(answer(500, ("Retry-After", "9 (busy);duration=60"))) == 2.0
    assert retry_wait(answer(500)) is None
    assert retry_wait(answer(503, ("Retry-After", "1"))) is None
    assert retry_wait(answer(488)) is None
