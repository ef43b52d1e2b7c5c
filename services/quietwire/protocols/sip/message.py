"""SIP requests and responses (RFC 3261 section 7): parse and serialize.

Parsing is tolerant where RFC 3261 is (header folding, compact names, any
case, whitespace around ``:``) and strict where RFC 4475 says a message is
broken: a bad start line, a missing mandatory header, a bad CSeq or a
Content-Length beyond the data all raise :class:`ParseError` with the status a
server answers with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int
from quietwire.protocols.sip.headers import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    split_list,
)
from quietwire.protocols.sip.uri import SipUri

SIP_VERSION = "SIP/2.0"
#: Headers every request must carry (RFC 3261 section 8.1.1); Max-Forwards is
#: added by proxies when a 2543-era client forgets it.
MANDATORY = ("To", "From", "CSeq", "Call-ID", "Via")
#: Headers a message carries at most once (RFC 3261 section 20; RFC 4475
#: sections 3.3.8 and 3.3.9: more than one is a 400).
SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) (.*)$")
_REQUEST_LINE = re.compile(r"^(\S+) (\S+) (SIP/[0-9]+\.[0-9]+)$", re.ASCII)
#: RFC 3261 section 25.1: ``callid = word [ "@" word ]``.
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?")


class Headers:
    """Ordered SIP headers; names canonical (``v`` is ``Via``), lookups by any spelling."""

    __slots__ = ("_items", "version")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items or []]
        #: Bumped on every change, so parsed views can be cached safely.
        self.version = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def copy(self) -> Headers:
        return Headers(list(self._items))

    def get(self, name: str) -> str | None:
        name = canonical_name(name)
        for n, v in self._items:
            if n == name:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers split at their commas."""
        name = canonical_name(name)
        values = [v for n, v in self._items if n == name]
        if name in LIST_HEADERS:
            return [part for v in values for part in split_list(v)]
        return values

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        item = (canonical_name(name), value)
        self.version += 1
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` by one value, where the first one was."""
        name = canonical_name(name)
        index = next((i for i, (n, _) in enumerate(self._items) if n == name), None)
        self.remove(name)
        self._items.insert(len(self._items) if index is None else index, (name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self.version += 1
        self._items = [(n, v) for n, v in self._items if n != name]

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the first value of list header ``name`` where it stands (the top
        Via); the line's other values stay, each on a line of its own after it.
        False when there is none."""
        name = canonical_name(name)
        for index, (n, v) in enumerate(self._items):
            if n != name:
                continue
            values = split_list(v)
            if values:
                rest = [(name, other) for other in values[1:]]
                self._items[index : index + 1] = [(name, value), *rest]
                self.version += 1
                return True
        return False

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (e.g. the top Via)."""
        values = self.get_all(name)
        if not values:
            return None
        canonical = canonical_name(name)
        rest = values[1:]
        index = next(i for i, (n, _) in enumerate(self._items) if n == canonical)
        self.remove(canonical)
        for offset, value in enumerate(rest):
            self._items.insert(index + offset, (canonical, value))
        return values[0]


T = TypeVar("T")


@dataclass(slots=True)
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    _parsed: dict[str, tuple[Headers, int, object]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def view(self, name: str, parse: Callable[[], T]) -> T:
        """``parse()``'s value, remembered under ``name`` until the headers change:
        each header is parsed once per message however many readers it has (the
        built-in views here; credentials in :mod:`quietwire.signaling.auth`).
        ``parse`` must read only the headers; what it raises is not remembered."""
        cached = self._parsed.get(name)
        if cached is not None and cached[0] is self.headers and cached[1] == self.headers.version:
            return cached[2]  # type: ignore[return-value]
        value = parse()
        self._parsed[name] = (self.headers, self.headers.version, value)
        return value

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return self.view("cseq", lambda: CSeq.parse(self.headers.get("CSeq") or ""))

    @property
    def vias(self) -> list[Via]:
        return self.view("vias", lambda: [Via.parse(v) for v in self.headers.get_all("Via")])

    @property
    def from_(self) -> NameAddr:
        return self.view("from", lambda: NameAddr.parse(self.headers.get("From") or ""))

    @property
    def to(self) -> NameAddr:
        return self.view("to", lambda: NameAddr.parse(self.headers.get("To") or ""))

    @property
    def contacts(self) -> list[NameAddr]:
        return self.view(
            "contacts",
            lambda: [
                NameAddr.parse(v) for v in self.headers.get_all("Contact") if v.strip() != "*"
            ],
        )

    def replace_top_via(self, via: Via) -> None:
        """The top Via replaced in place (RFC 3581 stamping), its parsed view kept."""
        vias = [via, *self.vias[1:]]
        if self.headers.replace_first("Via", str(via)):
            self._parsed["vias"] = (self.headers, self.headers.version, vias)

    def _serialize(self, start_line: str) -> bytes:
        """Wire bytes; Content-Length is always written, true to the body, where it was."""
        length = f"Content-Length: {len(self.body)}"
        lines = [start_line]
        lines += [length if n == "Content-Length" else f"{n}: {v}" for n, v in self.headers]
        if "Content-Length" not in self.headers:
            lines.append(length)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(slots=True)
class Request(_Message):
    method: str = "OPTIONS"
    uri: str = ""

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")

    def copy(self) -> Request:
        return Request(self.headers.copy(), self.body, self.method, self.uri)


@dataclass(slots=True)
class Response(_Message):
    status: int = 200
    reason: str = "OK"

    def serialize(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")

    def copy(self) -> Response:
        return Response(self.headers.copy(), self.body, self.status, self.reason)


Message = Request | Response

#: Headers a response copies from its request (RFC 3261 section 8.2.6.2).
RESPONSE_COPIES = ("Via", "From", "To", "Call-ID", "CSeq")


def reply(request: Request, status: int, reason: str, to_tag: str | None = None) -> Response:
    """A response to ``request``; ``to_tag`` is added to To when it has none."""
    response = Response(status=status, reason=reason)
    for name in RESPONSE_COPIES:
        for value in request.headers.get_all(name):
            if name == "To" and to_tag and NameAddr.parse(value).tag is None:
                value = f"{value};tag={to_tag}"
            response.headers.add(name, value)
    return response


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """The header block and what follows the empty line (CRLF CRLF, or bare LF LF)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at >= 0:
            return data[:at], data[at + len(sep) :]
    return data, b""


def _header_lines(head: str) -> list[str]:
    """Lines of the header block with folded continuations joined (RFC 3261 7.3.1)."""
    lines: list[str] = []
    pieces = head.split("\n")
    for index, piece in enumerate(pieces):
        # Line ends are LF or CRLF: the CR before each LF goes (str methods, not re: hot).
        raw = piece[:-1] if piece.endswith("\r") and index < len(pieces) - 1 else piece
        if "\r" in raw:
            raise ParseError("bare CR in header block")
        if raw[:1] in (" ", "\t"):
            if not lines:
                raise ParseError("continuation before first header")
            lines[-1] = lines[-1].rstrip() + " " + raw.strip()
        else:
            lines.append(raw)
    return lines


def parse_message(data: bytes, *, datagram: bool = True) -> Message:
    """One complete message. For datagrams the body is what Content-Length says."""
    head_bytes, rest = split_head(data.lstrip(b"\r\n"))
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("headers are not UTF-8") from exc
    lines = _header_lines(head)
    if not lines or not lines[0]:
        raise ParseError("empty message")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not is_token(name):
            raise ParseError("bad header line")
        headers.add(name, value.strip())
    names = [name for name, _ in headers]
    for name in SINGLE:
        if names.count(name) > 1:
            raise ParseError(f"more than one {name}")
    length_text = headers.get("Content-Length")
    if length_text is None:
        body = rest if datagram else b""
    else:
        length = ascii_int(length_text, "Content-Length")
        if length > len(rest):
            raise ParseError("Content-Length beyond the data")
        body = rest[:length]
    message = _start_line(lines[0], headers, body)
    _validate(message)
    return message


def _start_line(line: str, headers: Headers, body: bytes) -> Message:
    if line.startswith("SIP/"):
        match = _STATUS_LINE.match(line)
        if not match:
            raise ParseError("bad status line")
        return Response(headers, body, int(match.group(1)), match.group(2))
    match = _REQUEST_LINE.match(line)
    if not match:
        raise ParseError("bad request line")
    method, uri, version = match.groups()
    if version != SIP_VERSION:
        raise ParseError("SIP version not supported", 505)
    if not is_token(method):
        raise ParseError("bad method")
    parsed = SipUri.parse(uri)  # 416 for a scheme we do not serve
    if parsed.headers is not None:
        # RFC 3261 section 19.1.1 (table 1), RFC 4475 section 3.1.2.11.
        raise ParseError("headers in Request-URI")
    return Request(headers, body, method, uri)


def _validate(message: Message) -> None:
    for name in MANDATORY:
        if message.headers.get(name) is None:
            raise ParseError(f"missing {name}")
    if not _CALL_ID.fullmatch(message.call_id):
        raise ParseError("bad Call-ID")
    cseq = message.cseq
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError("CSeq method does not match")
    message.vias  # noqa: B018 - every Via must parse
    message.from_  # noqa: B018
    message.to  # noqa: B018
    max_forwards = message.headers.get("Max-Forwards")
    if max_forwards is not None:
        ascii_int(max_forwards, "Max-Forwards", 255)
