"""Message framing on stream transports (TLS, TCP): RFC 3261 section 18.3.

Bytes in, whole messages out, by Content-Length. Limits bound what a peer can
make us buffer; a framing violation raises :class:`ParseError` and the
connection is to be closed, since the stream can no longer be trusted. A
well-framed message that does not parse comes out as :class:`Malformed`. Keep-alives (RFC 5626
section 4.4.1: CRLFCRLF ping, CRLF pong) are reported, not parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Message, parse_message

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
PING = b"\r\n\r\n"
PONG = b"\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLFCRLF ping: answer with a CRLF pong."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message framed correctly that does not parse: answer 400, keep the connection."""

    data: bytes
    error: ParseError


@dataclass(slots=True)
class StreamFramer:
    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Message | KeepAlive | Malformed]:
        """Every complete message (or ping) that ``data`` finishes, in order."""
        self._buffer += data
        out: list[Message | KeepAlive | Malformed] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Message | KeepAlive | Malformed | None:
        buffer = self._buffer
        if buffer.startswith(PING):
            del buffer[: len(PING)]
            return KeepAlive()
        while buffer.startswith(b"\r\n") and len(buffer) > 2 and buffer[2:4] != b"\r\n":
            del buffer[:2]  # a lone CRLF (pong, or stray) between messages
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.max_header_bytes:
                raise ParseError("headers too large")
            return None
        if end > self.max_header_bytes:
            raise ParseError("headers too large")
        length = _content_length(bytes(buffer[:end]))
        if length > self.max_body_bytes:
            raise ParseError("body too large", 413)
        total = end + 4 + length
        if len(buffer) < total:
            return None
        data = bytes(buffer[:total])
        del buffer[:total]
        try:
            return parse_message(data, datagram=False)
        except ParseError as exc:
            return Malformed(data, exc)


def _content_length(head: bytes) -> int:
    """Content-Length (or ``l``) from a header block; required on streams (18.3)."""
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise ParseError("bad Content-Length")
            return int(text)
    raise ParseError("Content-Length required on stream transports")
