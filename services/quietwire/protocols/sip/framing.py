"""Message framing on stream transports (TLS, TCP): RFC 3261 section 18.3.

Bytes in, whole messages out, by Content-Length. Limits bound what a peer can
make us buffer: until someone has authenticated on the stream (``trusted``), a
message may carry only a small body. (Credentials in a header do not lift it:
anyone can write one, and a real client's first, unauthenticated request
carries the same body as its authenticated retry.)
A framing violation (no, two or a bad Content-Length, a block over the limits)
raises :class:`ParseError` and the connection is to be closed, since the stream
can no longer be trusted (RFC 4475 section 3.3.9); :meth:`StreamFramer.pending`
is what to answer it from. A well-framed message that does not parse comes out
as :class:`Malformed` and the messages after it are framed as usual. Keep-alives (RFC 5626
section 4.4.1: CRLFCRLF ping, CRLF pong) are reported, not parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int
from quietwire.protocols.sip.headers import canonical_name
from quietwire.protocols.sip.message import Message, parse_lines, parse_message, plain_head

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = 64 * 1024
#: The body a message may carry before anyone on the stream has authenticated.
PREAUTH_BODY_BYTES: Final = 4 * 1024
PING: Final = b"\r\n\r\n"
PONG: Final = b"\r\n"


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
    #: The body limit of a message while not ``trusted``
    #: (None: ``max_body_bytes`` for every message, as a phone's framer has).
    preauth_body_bytes: int | None = None
    #: Someone authenticated on this stream: every message may use ``max_body_bytes``.
    trusted: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _error: ParseError | None = None

    @property
    def error(self) -> ParseError | None:
        """Why the stream cannot be framed any more (set once, then every feed raises it)."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes of a message not yet complete (what the partial-message deadline
        watches); CR and LF between messages are keep-alives, not a message."""
        return len(self._buffer.lstrip(b"\r\n"))

    def pending(self) -> bytes:
        """The start of the buffered, unframed input (to answer a framing error from)."""
        return bytes(self._buffer[: self.max_header_bytes + 4])

    def feed(self, data: bytes) -> list[Message | KeepAlive | Malformed]:
        """Every complete message (or ping) that ``data`` finishes, in order.

        Raises :class:`ParseError` when the stream breaks; messages completed
        before the break in the same call are returned first and :attr:`error`
        is set (the next call raises it).
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        out: list[Message | KeepAlive | Malformed] = []
        while True:
            try:
                item = self._next()
            except ParseError as exc:
                self._error = exc
                if not out:
                    raise
                return out
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Message | KeepAlive | Malformed | None:
        buffer = self._buffer
        if buffer.startswith(PING):
            del buffer[: len(PING)]
            return KeepAlive()
        # A lone CRLF (pong, or stray) between messages, known not to start a
        # ping only once the two bytes after it are here (a ping may come cut).
        while buffer.startswith(b"\r\n") and len(buffer) >= 4 and buffer[2:4] != b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.max_header_bytes:
                raise ParseError("headers too large")
            return None
        if end > self.max_header_bytes:
            raise ParseError("headers too large")
        head = bytes(buffer[:end])
        lines = plain_head(head)
        length = _content_length(head) if lines is None else _length_in(lines)
        limit = self.max_body_bytes
        if self.preauth_body_bytes is not None and not self.trusted:
            limit = min(limit, self.preauth_body_bytes)
        if length > limit:
            raise ParseError("body too large", 413)
        total = end + 4 + length
        if len(buffer) < total:
            return None
        data = bytes(buffer[:total])
        del buffer[:total]
        try:
            if lines is None:
                return parse_message(data, datagram=False)
            return parse_lines(lines, data[end + 4 :], datagram=False)
        except ParseError as exc:
            return Malformed(data, exc)


def _content_length(head: bytes) -> int:
    """Content-Length of a header block: required on streams (RFC 3261 section
    18.3), exactly once (RFC 4475 section 3.3.9). Lines end at CRLF, names are
    stripped of ASCII whitespace (as ``bytes.strip`` does)."""
    # Latin-1: one character per byte, and str operations compile to direct calls.
    return _length_in(head.decode("latin-1").split("\r\n"))


def _length_in(lines: list[str]) -> int:
    """:func:`_content_length` of a block split at CRLF (the start line first),
    decoded as Latin-1 or, as :func:`plain_head` has it, UTF-8: the same, since
    a Content-Length line is ASCII either way and no other character lowers to
    one of its name's letters."""
    lengths: list[str] = []
    for index in range(1, len(lines)):
        line = lines[index]
        first = line[:1]
        if first not in _MAY_START_LENGTH:
            continue
        if (first == "C" or first == "c") and line[:14].lower() != "content-length":
            continue  # Call-ID, Contact, CSeq... (hot: no closer look)
        name, colon, value = line.partition(":")
        if colon and canonical_name(name.strip(_ASCII_WHITESPACE)) == "Content-Length":
            lengths.append(value.strip(_ASCII_WHITESPACE))
    if not lengths:
        raise ParseError("Content-Length required on stream transports")
    if len(lengths) > 1:
        raise ParseError("more than one Content-Length")
    return ascii_int(lengths[0], "Content-Length")


_ASCII_WHITESPACE: Final = " \t\n\r\x0b\x0c"
#: How a line naming Content-Length can start: ``Content-Length`` or ``l`` in
#: any case, maybe after whitespace.
_MAY_START_LENGTH: Final = frozenset({"C", "c", "L", "l", " ", "\t", "\n", "\r", "\x0b", "\x0c"})
