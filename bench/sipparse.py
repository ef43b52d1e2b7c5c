"""Micro benchmark of the SIP parser: what signaling does with each message of the loads.

``python -m bench.sipparse`` frames, parses and reads (Via, CSeq, From, To,
Contact, digest credentials) the messages ``bench/register.xml`` and
``bench/call_uac.xml`` send, and answers each request (``reply`` serialized),
then prints microseconds per message. The compiled parser runs when it is
fresh (``make setup``), the pure-Python one with ``QW_NATIVE=0``. Quick to run
between two edits; ``bench.instructions`` is the figure to quote.
"""

from __future__ import annotations

import argparse
import timeit
from functools import partial

from quietwire.protocols.sip import message as message_module
from quietwire.protocols.sip.digest import Credentials
from quietwire.protocols.sip.framing import StreamFramer
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.transaction import ServerKey

_VIA = "Via: SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bK-4711-1-0;rport;alias"
_SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\n"
    "t=0 0\r\nm=audio 6000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
)
_AUTH = (
    'Digest username="alice",realm="quietwire",uri="sip:10.0.0.1",'
    'nonce="AAABjLsO3R8BqmJ0PyB4vN2mGGLwZ3WzQUS0",cnonce="6b8b4567",nc=00000001,qop=auth,'
    'response="b9a7f4a1c4f6f06a8c2b4b7d3a9e1f20",algorithm=MD5'
)


def _message(lines: list[str], body: str = "") -> bytes:
    head = "\r\n".join([*lines, f"Content-Length: {len(body)}"])
    return f"{head}\r\n\r\n{body}".encode()


MESSAGES = {
    "REGISTER": _message(
        [
            "REGISTER sip:10.0.0.1 SIP/2.0",
            _VIA,
            "From: <sip:alice@10.0.0.1>;tag=1",
            "To: <sip:alice@10.0.0.1>",
            "Call-ID: 1-4711@10.0.0.2",
            "CSeq: 2 REGISTER",
            "Contact: <sip:alice@10.0.0.2:5061;transport=tcp>",
            f"Authorization: {_AUTH}",
            "Expires: 600",
            "Max-Forwards: 70",
        ]
    ),
    "INVITE": _message(
        [
            "INVITE sip:bob@10.0.0.1 SIP/2.0",
            _VIA,
            "From: <sip:alice@10.0.0.1>;tag=4711uac1",
            "To: <sip:bob@10.0.0.1>",
            "Call-ID: 1-4711@10.0.0.2",
            "CSeq: 2 INVITE",
            "Contact: <sip:alice@10.0.0.2:5061;transport=tcp>",
            f"Proxy-Authorization: {_AUTH}",
            "Max-Forwards: 70",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
    "200": _message(
        [
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK.a1b2c3;rport=5061;received=10.0.0.1",
            _VIA,
            "Record-Route: <sip:10.0.0.1:5061;transport=tls;lr>",
            "From: <sip:alice@10.0.0.1>;tag=4711uac1",
            "To: <sip:bob@10.0.0.1>;tag=as5e3c1d",
            "Call-ID: 1-4711@10.0.0.2",
            "CSeq: 2 INVITE",
            "Contact: <sip:bob@10.0.0.3:5061;transport=tls>",
            "Content-Type: application/sdp",
        ],
        _SDP,
    ),
}


def handle(data: bytes) -> bytes:
    """Frame ``data``, read what signaling reads, and answer a request."""
    (message,) = StreamFramer().feed(data)
    assert isinstance(message, Request | Response), message
    message.vias  # noqa: B018 - read as signaling reads them
    message.cseq  # noqa: B018
    message.from_  # noqa: B018
    message.to  # noqa: B018
    message.contacts  # noqa: B018
    if not isinstance(message, Request):
        return b""
    ServerKey.of(message)
    for name in ("Authorization", "Proxy-Authorization"):
        value = message.headers.get(name)
        if value is not None:
            Credentials.parse(value)
    return reply(message, 200, "OK", "tag1").serialize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="messages per timing")
    args = parser.parse_args()
    compiled = not (message_module.__file__ or "").endswith(".py")
    print(f"parser: {'compiled' if compiled else 'pure Python'}")
    for name, data in MESSAGES.items():
        handle(data)
        best = min(timeit.repeat(partial(handle, data), number=args.number, repeat=5))
        print(f"{name:>9}: {best / args.number * 1e6:7.1f} µs")


if __name__ == "__main__":
    main()
