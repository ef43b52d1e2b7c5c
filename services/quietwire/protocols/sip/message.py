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
from typing import Final, TypeVar

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int
from quietwire.protocols.sip.headers import (
    LIST_HEADERS,
    SPELLED,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    split_list,
)
from quietwire.protocols.sip.uri import SipUri

SIP_VERSION: Final = "SIP/2.0"
#: Headers every request must carry (RFC 3261 section 8.1.1); Max-Forwards is
#: added by proxies when a 2543-era client forgets it.
MANDATORY: Final = ("To", "From", "CSeq", "Call-ID", "Via")
#: Headers a message carries at most once (RFC 3261 section 20; RFC 4475
#: sections 3.3.8 and 3.3.9: more than one is a 400).
SINGLE: Final = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
_STATUS_LINE: Final = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) (.*)$")
_REQUEST_LINE: Final = re.compile(r"^(\S+) (\S+) (SIP/[0-9]+\.[0-9]+)$", re.ASCII)
#: RFC 3261 section 25.1: ``callid = word [ "@" word ]``.
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID: Final = re.compile(rf"{_WORD}(?:@{_WORD})?")
_SINGLE: Final = frozenset(SINGLE)
#: What parse_message remembers the first value of, for _validate.
_TRACKED: Final = frozenset(SINGLE + MANDATORY)


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
        return _headers_of(list(self._items))  # names already canonical

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
        self._put(canonical_name(name), [value])

    def remove(self, name: str) -> None:
        self._put(canonical_name(name), [])

    def _put(self, name: str, values: list[str]) -> None:
        """Every ``name`` (canonical) replaced by ``values``, where the first one was
        (at the end when there was none): one pass over the headers."""
        kept: list[tuple[str, str]] = []
        at = -1
        for item in self._items:
            if item[0] != name:
                kept.append(item)
            elif at < 0:
                at = len(kept)
        if at < 0:
            at = len(kept)
        kept[at:at] = [(name, value) for value in values]
        self._items = kept
        self.version += 1

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
        """Remove and return the first value of a list header (e.g. the top Via); the
        others stay where the first line was, one a line."""
        values = self.get_all(name)
        if not values:
            return None
        self._put(canonical_name(name), values[1:])
        return values[0]


def _headers_of(items: list[tuple[str, str]]) -> Headers:
    """Headers holding ``items`` as they are: their names already canonical."""
    headers = Headers()
    headers._items = items
    return headers


T = TypeVar("T")


@dataclass(slots=True, init=False)
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    _parsed: dict[str, tuple[Headers, int, object]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _views: dict[str, tuple[object, object]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        # Written out (in Request and Response too): compiled with the module,
        # where the generated one would run interpreted.
        self.headers = Headers() if headers is None else headers
        self.body = body
        self._parsed = {}
        self._views = {}

    def view(self, name: str, parse: Callable[[], T]) -> T:
        """``parse()``'s value, remembered under ``name`` until the headers change:
        each header is parsed once per message however many readers it has
        (credentials in :mod:`quietwire.signaling.auth`).
        ``parse`` must read only the headers; what it raises is not remembered."""
        cached = self._parsed.get(name)
        if cached is not None and cached[0] is self.headers and cached[1] == self.headers.version:
            return cached[2]  # type: ignore[return-value]
        value = parse()
        self._parsed[name] = (self.headers, self.headers.version, value)
        return value

    # The built-in views (Via, CSeq, From, To, Contact) are remembered with the
    # header text they were parsed from, and hold while that text does: a Via
    # stamped or added leaves From and To parsed, and a copy or a reply starts
    # with what its original had parsed (the same text comes back in them).
    # Parsed values are shared between those messages: never change one.

    def _fresh(self, view: str, source: object) -> object | None:
        """The value of ``view`` parsed from ``source`` (its header text), or None."""
        cached = self._views.get(view)
        if cached is not None and cached[0] == source:
            return cached[1]
        return None

    def _keep(self, view: str, source: object, value: object) -> None:
        self._views[view] = (source, value)

    def _inherit(self, other: _Message) -> None:
        """Start from what ``other`` has parsed (kept only while the text is the same)."""
        self._views = dict(other._views)

    def _values(self, name: str) -> list[str]:
        """Every line's value of ``name`` (canonical), unsplit: what a list view is parsed from."""
        return [v for n, v in self.headers._items if n == name]

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        text = self.headers.get("CSeq") or ""
        cached = self._fresh("cseq", text)
        if isinstance(cached, CSeq):
            return cached
        cseq = CSeq.parse(text)
        self._keep("cseq", text, cseq)
        return cseq

    @property
    def vias(self) -> list[Via]:
        lines = self._values("Via")
        cached = self._fresh("vias", lines)
        if isinstance(cached, list):
            return cached
        vias = [Via.parse(v) for line in lines for v in split_list(line)]
        self._keep("vias", lines, vias)
        return vias

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to", "To")

    def _name_addr(self, view: str, name: str) -> NameAddr:
        text = self.headers.get(name) or ""
        cached = self._fresh(view, text)
        if isinstance(cached, NameAddr):
            return cached
        value = NameAddr.parse(text)
        self._keep(view, text, value)
        return value

    @property
    def contacts(self) -> list[NameAddr]:
        lines = self._values("Contact")
        cached = self._fresh("contacts", lines)
        if isinstance(cached, list):
            return cached
        contacts = [
            NameAddr.parse(v) for line in lines for v in split_list(line) if v.strip() != "*"
        ]
        self._keep("contacts", lines, contacts)
        return contacts

    def replace_top_via(self, via: Via) -> None:
        """The top Via replaced in place (RFC 3581 stamping), its parsed view kept."""
        vias = [via, *self.vias[1:]]
        if self.headers.replace_first("Via", via.wire()):
            self._keep("vias", self._values("Via"), vias)

    def _serialize(self, start_line: str) -> bytes:
        """Wire bytes; Content-Length is always written, true to the body, where it was."""
        length = str(len(self.body))
        # One join of every piece (no string per line); the list iterated as a list.
        parts = [start_line, "\r\n"]
        written = False
        for name, value in self.headers._items:
            if name == "Content-Length":
                value, written = length, True
            parts.append(name)
            parts.append(": ")
            parts.append(value)
            parts.append("\r\n")
        if not written:
            parts.append(f"Content-Length: {length}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8") + self.body


@dataclass(slots=True, init=False)
class Request(_Message):
    method: str = "OPTIONS"
    uri: str = ""

    def __init__(
        self,
        headers: Headers | None = None,
        body: bytes = b"",
        method: str = "OPTIONS",
        uri: str = "",
    ) -> None:
        _Message.__init__(self, headers, body)  # not super(): slots=True makes a new class
        self.method = method
        self.uri = uri

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")

    def copy(self) -> Request:
        out = Request(self.headers.copy(), self.body, self.method, self.uri)
        out._inherit(self)
        return out


@dataclass(slots=True, init=False)
class Response(_Message):
    status: int = 200
    reason: str = "OK"

    def __init__(
        self,
        headers: Headers | None = None,
        body: bytes = b"",
        status: int = 200,
        reason: str = "OK",
    ) -> None:
        _Message.__init__(self, headers, body)  # not super(): slots=True makes a new class
        self.status = status
        self.reason = reason

    def serialize(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")

    def copy(self) -> Response:
        out = Response(self.headers.copy(), self.body, self.status, self.reason)
        out._inherit(self)
        return out


Message = Request | Response

#: Headers a response copies from its request (RFC 3261 section 8.2.6.2).
RESPONSE_COPIES: Final = ("Via", "From", "To", "Call-ID", "CSeq")


def reply(request: Request, status: int, reason: str, to_tag: str | None = None) -> Response:
    """A response to ``request``; ``to_tag`` is added to To when it has none."""
    items: list[tuple[str, str]] = []
    request_items = request.headers._items  # a list: iterated without the iterator protocol
    for name in RESPONSE_COPIES:
        for n, value in request_items:
            if n != name:
                continue
            if name == "Via":
                items += [(name, part) for part in split_list(value)]
                continue
            if name == "To" and to_tag and _tag(request, value) is None:
                value = f"{value};tag={to_tag}"
            items.append((name, value))
    response = Response(_headers_of(items), status=status, reason=reason)
    response._inherit(request)
    return response


def _tag(request: Request, to: str) -> str | None:
    """The tag of a To value of ``request``; the first one's as the `to` view has it."""
    return (request.to if to is request.headers.get("To") else NameAddr.parse(to)).tag


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """The header block and what follows the empty line (CRLF CRLF, or bare LF LF)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at >= 0:
            return data[:at], data[at + len(sep) :]
    return data, b""


def _header_lines(head: str) -> list[str]:
    """Lines of the header block with folded continuations joined (RFC 3261 7.3.1)."""
    lines = _plain_lines(head)
    return _folded_lines(head) if lines is None else lines


def _plain_lines(head: str) -> list[str] | None:
    """The lines of a header block in which every line ends in CRLF, with no bare
    CR or LF and no folding: nothing to join (the common case); else None."""
    lines = head.split("\r\n")
    for line in lines:
        if "\r" in line or "\n" in line or line[:1] == " " or line[:1] == "\t":
            return None
    return lines


def plain_head(head: bytes) -> list[str] | None:
    """The lines of a header block (the bytes before CRLF CRLF) as :func:`parse_message`
    reads them, when they need nothing but a split: UTF-8, nothing before the start
    line, :func:`_plain_lines`. None for any other block (the general path reads it).
    A stream framer looks for Content-Length in these, then hands them to
    :func:`parse_lines`: the block is decoded and split once."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = _plain_lines(text)
    return lines if lines is not None and lines[0] else None


def _folded_lines(head: str) -> list[str]:
    """:func:`_header_lines` of any block: LF or CRLF line ends, folding."""
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
    return parse_lines(_header_lines(head), rest, datagram=datagram)


def parse_lines(lines: list[str], rest: bytes, *, datagram: bool) -> Message:
    """The message of header ``lines`` (unfolded, the start line first) and ``rest``,
    what follows the empty line; :func:`parse_message` once the block is split."""
    if not lines or not lines[0]:
        raise ParseError("empty message")
    items: list[tuple[str, str]] = []
    # The first value of each header validation reads (SINGLE and MANDATORY), and
    # which SINGLE headers came more than once: one pass, no lookups after it.
    first: dict[str, str] = {}
    repeated: set[str] = set()
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(":")
        canonical = SPELLED.get(name)  # the usual spelling: a token, canonical
        if canonical is None:
            name = name.strip()
            if not is_token(name):
                raise ParseError("bad header line")
            canonical = canonical_name(name)
        if not colon:
            raise ParseError("bad header line")
        value = value.strip()
        if canonical in _TRACKED:
            if canonical not in first:
                first[canonical] = value
            elif canonical in _SINGLE:
                repeated.add(canonical)
        items.append((canonical, value))
    for name in SINGLE:
        if name in repeated:
            raise ParseError(f"more than one {name}")
    length_text = first.get("Content-Length")
    if length_text is None:
        body = rest if datagram else b""
    else:
        length = ascii_int(length_text, "Content-Length")
        if length > len(rest):
            raise ParseError("Content-Length beyond the data")
        body = rest[:length]
    message = _start_line(lines[0], _headers_of(items), body)
    _validate(message, first)
    return message


def _start_line(line: str, headers: Headers, body: bytes) -> Message:
    if line.startswith("SIP/"):
        match = _STATUS_LINE.match(line)
        if not match:
            raise ParseError("bad status line")
        return Response(headers, body, int(match.group(1)), match.group(2))
    method, uri = _plain_request_line(line) or _request_line(line)
    parsed = SipUri.parse(uri)  # 416 for a scheme we do not serve
    if parsed.headers is not None:
        # RFC 3261 section 19.1.1 (table 1), RFC 4475 section 3.1.2.11.
        raise ParseError("headers in Request-URI")
    return Request(headers, body, method, uri)


def _request_line(line: str) -> tuple[str, str]:
    """The method and Request-URI of a request line (RFC 3261 section 7.1)."""
    match = _REQUEST_LINE.match(line)
    if not match:
        raise ParseError("bad request line")
    method, uri, version = match.groups()
    if version != SIP_VERSION:
        raise ParseError("SIP version not supported", 505)
    if not is_token(method):
        raise ParseError("bad method")
    return method, uri


def _plain_request_line(line: str) -> tuple[str, str] | None:
    """:func:`_request_line` of the usual line ("METHOD uri SIP/2.0", one space
    each, nothing unprintable) without the regex; None for any other."""
    method, _, rest = line.partition(" ")
    uri, _, version = rest.partition(" ")
    if version == SIP_VERSION and is_token(method) and uri.isprintable() and uri:
        return method, uri
    return None


def _validate(message: Message, first: dict[str, str]) -> None:
    """``first``: the first value of each SINGLE and MANDATORY header present."""
    for name in MANDATORY:
        if name not in first:
            raise ParseError(f"missing {name}")
    if not _CALL_ID.fullmatch(first["Call-ID"]):
        raise ParseError("bad Call-ID")
    cseq = message.cseq
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError("CSeq method does not match")
    message.vias  # noqa: B018 - every Via must parse
    message.from_  # noqa: B018
    message.to  # noqa: B018
    max_forwards = first.get("Max-Forwards")
    if max_forwards is not None:
        ascii_int(max_forwards, "Max-Forwards", 255)
