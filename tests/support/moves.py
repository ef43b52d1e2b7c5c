"""A phone's side of a move (issue 15) in tests: its SDP, and how it takes the
platform's re-INVITE."""

from __future__ import annotations

from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request

from tests.integration.signaling_harness import next_request

SDP = "application/sdp"
#: Seconds a phone's request through the platform may take.
WITHIN = 10


def offer(user: str, port: int) -> bytes:
    """A ZRTP audio offer or answer, with a zrtp-hash of the user's own."""
    lines = [
        "v=0",
        f"o={user} 42 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        f"a=zrtp-hash:1.10 {user[:2].encode().hex() * 16}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def take_move(phone: UserAgent, answer: bytes, status: int = 200) -> tuple[Request, Request]:
    """The platform's re-INVITE to ``phone``, answered ``status`` (with ``answer``
    when 200), and the ACK that follows."""
    invite = await next_request(phone, "INVITE", WITHIN)
    reason = "OK" if status == 200 else "Not Acceptable Here"
    await phone.connection.send(
        phone.answer(invite, status, reason, body=answer if status == 200 else b"")
    )
    if status != 200:
        return invite, invite  # the ACK of a non-2xx is hop by hop: our platform's
    return invite, await next_request(phone, "ACK", WITHIN)
