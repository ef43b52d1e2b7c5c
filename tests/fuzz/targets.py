"""Fuzz targets: one function per parser a stranger's bytes reach, with its invariants.

Each target takes bytes and returns normally for any input. It fails (raises
AssertionError or anything else) when an invariant breaks:

- only the parser's own ``ParseError`` escapes, never another exception;
- what parses, serializes, and parses again to the same thing
  (``parse(serialize(parse(x)))`` stable) where there is a serializer;
- a stream framed whole or cut into pieces gives the same messages;
- the 400 we answer garbage with never carries a line the peer wrote (no
  header injection).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.errors import ParseError as RtpParseError
from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.sdp.session import ParseError as SdpParseError
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip import digest
from quietwire.protocols.sip.errors import ParseError as SipParseError
from quietwire.protocols.sip.framing import KeepAlive, Malformed, StreamFramer
from quietwire.protocols.sip.message import Message, Request, parse_message
from quietwire.protocols.zrtp import messages as zrtp_messages
from quietwire.protocols.zrtp.errors import ParseError as ZrtpParseError
from quietwire.protocols.zrtp.packet import FIRST_BYTE, HEADER, MAGIC_COOKIE, ZrtpPacket, crc
from quietwire.signaling.flows import bad_request_response

Target = Callable[[bytes], None]


def _sip_views(message: Message) -> None:
    """What the signaling service reads of a message, each view parse-checked."""
    for view in (
        lambda: message.contacts,
        lambda: message.request_uri if isinstance(message, Request) else None,
        lambda: [c.uri.aor for c in message.contacts],
        lambda: message.headers.get_all("Route"),
        lambda: message.headers.get_all("Record-Route"),
    ):
        with contextlib.suppress(SipParseError):
            view()


def sip_message(data: bytes) -> None:
    """A datagram: parse, read the views, round trip; garbage gets a clean 400."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        answer = bad_request_response(data, exc)
        if answer is not None:
            wire = answer.serialize()
            head = wire.split(b"\r\n\r\n", 1)[0]
            assert b"\r" not in head.replace(b"\r\n", b""), "bare CR echoed"
            assert b"\n" not in head.replace(b"\r\n", b""), "bare LF echoed"
            assert head.count(b"\r\n") == len(list(answer.headers)) + 1, "header injected"
        return
    _sip_views(message)
    wire = message.serialize()
    again = parse_message(wire)
    assert again.serialize() == wire, "SIP round trip not stable"


def _frame(chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    framer = StreamFramer(preauth_body_bytes=4096)
    out: list[bytes] = []
    error = None
    for chunk in chunks:
        try:
            items = framer.feed(chunk)
        except SipParseError as exc:
            error = exc.reason
            break
        for item in items:
            if isinstance(item, KeepAlive):
                out.append(b"ping")
            elif isinstance(item, Malformed):
                out.append(b"malformed:" + item.data)
            else:
                out.append(item.serialize())
        if framer.error is not None:
            error = framer.error.reason
            break
    return out, error


def sip_stream(data: bytes) -> None:
    """A TLS/TCP stream: framed whole, and cut where its first four bytes say."""
    if len(data) < 4:
        return
    rest = data[4:]
    cuts = sorted({byte * len(rest) // 256 for byte in data[:4]} | {0, len(rest)})
    pieces = [rest[start:end] for start, end in itertools.pairwise(cuts)]
    assert _frame(pieces) == _frame([rest]), "framing depends on how the stream is cut"


def sdp(data: bytes) -> None:
    try:
        session = SessionDescription.parse(data)
        session.connection  # noqa: B018
        for media in session.media:
            session.media_connection(media)
            media.rtcp_port  # noqa: B018
            media.rtcp_mux  # noqa: B018
            media.zrtp_hash  # noqa: B018
            media.crypto  # noqa: B018
            media.fingerprints  # noqa: B018
            media.direction  # noqa: B018
    except SdpParseError:
        return
    wire = session.serialize()
    assert SessionDescription.parse(wire).serialize() == wire, "SDP round trip not stable"


def zrtp(data: bytes) -> None:
    """A ZRTP message, bare and in a packet with a good CRC (so the fuzzer gets past it)."""
    zrtp_messages.message_type(data)
    try:
        message = zrtp_messages.parse_message(data)
    except ZrtpParseError:
        message = None
    if message is not None:
        wire = message.serialize()
        assert zrtp_messages.parse_message(wire) == message, "ZRTP round trip not stable"
    body = HEADER.pack(FIRST_BYTE, 0, 1, MAGIC_COOKIE, 0x01020304) + data
    try:
        packet = ZrtpPacket.parse(body + crc(body))
    except ZrtpParseError:
        return
    assert packet.message == data
    with contextlib.suppress(ZrtpParseError):
        zrtp_messages.ConfirmPlaintext.parse(data)


def rtp_demux(data: bytes) -> None:
    """What the relay does with any datagram on a media port: classify, parse RTP."""
    kind = classify(data)
    if kind is not PacketKind.RTP:
        return
    try:
        packet = Rtp.parse(data)
    except RtpParseError:
        return
    again = Rtp.parse(packet.serialize())
    assert (again.payload_type, again.sequence, again.ssrc, again.payload) == (
        packet.payload_type,
        packet.sequence,
        packet.ssrc,
        packet.payload,
    ), "RTP round trip not stable"


def digest_header(data: bytes) -> None:
    """Authorization / Proxy-Authorization and WWW-Authenticate values."""
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        credentials = digest.Credentials.parse(value)
        credentials.nonce_count  # noqa: B018
    except SipParseError:
        pass
    with contextlib.suppress(SipParseError):
        digest.parse_challenge(value)


TARGETS: dict[str, Target] = {
    "sip_message": sip_message,
    "sip_stream": sip_stream,
    "sdp": sdp,
    "zrtp": zrtp,
    "rtp_demux": rtp_demux,
    "digest": digest_header,
}
