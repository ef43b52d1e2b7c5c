"""SIP header names and the structured headers (RFC 3261 sections 7.3, 20, 25).

Messages keep header values as text; the types here parse them on demand:
:class:`NameAddr` (From, To, Contact, Route, Record-Route), :class:`Via`,
:class:`CSeq`, plus comma-list splitting that respects quotes and ``<>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int
from quietwire.protocols.sip.uri import MAX_CACHED_TEXT, SipUri

#: Compact forms (RFC 3261 section 7.3.3 and the extensions that define one).
COMPACT: Final = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "y": "Identity",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
}
_KNOWN = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "Flow-Timer",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "MIME-Version",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL: Final = {name.lower(): name for name in _KNOWN}
#: Headers whose values are comma-separated lists (RFC 3261 section 7.3.1).
LIST_HEADERS: Final = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)


def is_token(text: str) -> bool:
    """RFC 3261 section 25.1 ``token``: ``1*(alphanum / "-" / "." / "!" / "%" /
    "*" / "_" / "+" / "`" / "'" / "~")``."""
    # str methods, not re (hot): ASCII letters and digits, maybe with the usual
    # marks (branches, addresses); else nothing left once every token character
    # is stripped from both ends.
    if text.isalnum() or text.replace("-", "").replace(".", "").isalnum():
        return text.isascii()
    return text != "" and text.strip(_TCHARS) == ""


#: RFC 3261 section 25.1: the characters of a ``token``.
_TCHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"


#: Spellings known at once: each canonical name as itself (the common case; a
#: name found here is a token and needs no stripping).
SPELLED: Final = {name: name for name in _CANONICAL.values()}


def canonical_name(name: str) -> str:
    """``v`` → ``Via``, ``cseq`` → ``CSeq``; unknown names keep their spelling."""
    spelled = SPELLED.get(name)
    if spelled is not None:
        return spelled
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower, name)


def split_list(value: str) -> list[str]:
    """Split a comma list, not inside ``"quoted strings"`` or ``<URIs>``; drop empties."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    if '"' not in value and "<" not in value:  # nothing to skip: every comma splits
        return [p.strip() for p in value.split(",") if p.strip()]
    parts: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def unquote(text: str) -> str:
    """The content of a quoted-string (RFC 3261 section 25.1), escapes resolved."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ParseError("bad quoted string")
    inner = text[1:-1]
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner


_QUOTED_PAIR: Final = re.compile(r"\\(.)")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """``;name=value;flag`` with whitespace around the separators (wsinv), values maybe quoted."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for part in text.split(";") if '"' not in text else _split_outside_quotes(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq:
            if name:
                if not is_token(name):
                    raise ParseError("bad header parameter")
                params[name.lower()] = None
            continue
        value = value.strip()
        if not is_token(name):
            raise ParseError("bad header parameter")
        if not value:
            raise ParseError("empty header parameter value")
        params[name.lower()] = unquote(value) if value[0] == '"' else value
    return params


def _unquoted(text: str) -> Iterator[tuple[int, str]]:
    """Each character outside quoted-strings, with its index (RFC 3261 section 25.1)."""
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted:
            yield i, ch


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    cuts = [i for i, ch in _unquoted(text) if ch == sep]
    starts, ends = [-1, *cuts], [*cuts, len(text)]
    return [text[start + 1 : end] for start, end in zip(starts, ends, strict=True)]


def format_params(params: dict[str, str | None]) -> str:
    out: list[str] = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif value == "" or is_token(value) or _looks_like_host(value):
            out.append(f";{name}={value}")
        else:
            out.append(f";{name}={quote(value)}")
    return "".join(out)


_HOST_CHARS: Final = "[]0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.:-"


def _looks_like_host(value: str) -> bool:
    return value != "" and value.strip(_HOST_CHARS) == ""


@dataclass(frozen=True, slots=True, init=False)
class NameAddr:
    """``"Display" <sip:uri>;params`` or ``sip:uri;params`` (RFC 3261 section 20.10)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(
        self, uri: SipUri, display: str | None = None, params: dict[str, str | None] | None = None
    ) -> None:
        # Written out (here and in the other parsed types): compiled with the
        # module, where the generated one would run interpreted, 8 times slower.
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "display", display)
        object.__setattr__(self, "params", {} if params is None else params)

    @classmethod
    def parse(cls, value: str, *, shared: bool = True) -> NameAddr:
        """The value ``value`` is. Parsed values are shared (a dialog's From, To
        and Contact come back in each of its messages): never change one's
        ``params``. ``shared=False`` parses it anew, its URI too, outside the
        caches (:meth:`SipUri.parse` says why)."""
        if not shared:
            return cls._parse(value, shared=False)
        known = _NAME_ADDRS.get(value)
        return known if known is not None else _NAME_ADDRS.put(value, cls._parse(value))

    @classmethod
    def _parse(cls, value: str, *, shared: bool = True) -> NameAddr:
        value = value.strip()
        open_at = _find_unquoted(value, "<")
        if open_at < 0:
            uri_text, _, rest = value.partition(";")
            # RFC 3261 section 20.10: a URI holding "?" or "," must be in <>
            # (RFC 4475 section 3.1.2.13).
            if not uri_text or any(c in uri_text.strip() for c in " ?,"):
                raise ParseError("bad addr-spec")
            return cls(SipUri.parse(uri_text, shared=shared), None, parse_params(rest))
        close_at = value.find(">", open_at)
        if close_at < 0:
            raise ParseError("unterminated <URI>")
        inner = value[open_at + 1 : close_at]
        if inner != inner.strip() or not inner:
            raise ParseError("whitespace inside <URI>")
        display = value[:open_at].strip() or None
        if display is not None:
            if display.startswith('"'):
                display = unquote(display)
            elif not all(is_token(word) for word in display.split()):
                raise ParseError("bad display name")
        rest = value[close_at + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise ParseError("junk after <URI>")
        return cls(SipUri.parse(inner, shared=shared), display, parse_params(rest))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_params(self, **params: str | None) -> NameAddr:
        return NameAddr(self.uri, self.display, {**self.params, **params})

    def __str__(self) -> str:
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


T = TypeVar("T")


class Parsed(Generic[T]):
    """Values parsed from header texts, by text. A dialog's From, To and
    Contact, and each transaction's Vias, come back in every message and
    response of it. Bounded: past ``size`` texts the oldest goes first (what
    repeats is recent), and a text longer than ``longest`` is not kept (what
    anyone may send costs at most ``size`` short texts)."""

    def __init__(self, size: int, longest: int = MAX_CACHED_TEXT) -> None:
        self.size, self.longest = size, longest
        self._values: dict[str, T] = {}

    def get(self, text: str) -> T | None:
        return self._values.get(text)

    def put(self, text: str, value: T) -> T:
        if len(text) > self.longest:
            return value
        values = self._values
        if len(values) >= self.size and text not in values:
            del values[next(iter(values))]
        values[text] = value
        return value


def _find_unquoted(text: str, char: str) -> int:
    if '"' not in text:
        return text.find(char)
    return next((i for i, ch in _unquoted(text) if ch == char), -1)


_VIA: Final = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9-]+)\s+(.+)$", re.S)
#: Transports as ``Via.parse`` returns them (upper case), spelled so on the wire.
_TRANSPORTS: Final = frozenset({"TLS", "TCP", "UDP", "SCTP", "WS", "WSS", "DTLS-SCTP", "TLS-SCTP"})


@dataclass(frozen=True, slots=True, init=False)
class Via:
    """One Via value (RFC 3261 section 20.42, RFC 3581 rport, RFC 5923 alias)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "params", {} if params is None else params)

    @classmethod
    def parse(cls, value: str) -> Via:
        """The Via ``value`` is; shared, as :meth:`NameAddr.parse`'s are."""
        known = _VIAS.get(value)
        return known if known is not None else _VIAS.put(value, cls._parse(value))

    @classmethod
    def _parse(cls, value: str) -> Via:
        value = value.strip()
        transport, rest = _plain_sent_protocol(value) or _sent_protocol(value)
        sent_by, _, param_text = rest.partition(";")
        sent_by = sent_by.strip()
        try:
            uri = SipUri.parse(f"sip:{sent_by}")
        except ParseError as exc:
            raise ParseError("bad Via sent-by") from exc
        if uri.user is not None or uri.params:
            raise ParseError("bad Via sent-by")
        return Via(transport, uri.host, uri.port, parse_params(param_text))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def with_params(self, **params: str | None) -> Via:
        return Via(self.transport, self.host, self.port, {**self.params, **params})

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    def wire(self) -> str:
        """``str(self)``, and this Via what :meth:`parse` gives for that text from
        now on: a Via we write (our own, one we stamp) comes back in the
        responses, which then need not parse it."""
        text = str(self)
        _VIAS.put(text, self)
        return text


def _sent_protocol(value: str) -> tuple[str, str]:
    """The transport (upper case) of a stripped Via value and what follows it."""
    match = _VIA.match(value)
    if not match:
        raise ParseError("bad Via")
    return match.group(1).upper(), match.group(2)


def _plain_sent_protocol(value: str) -> tuple[str, str] | None:
    """:func:`_sent_protocol` of the common spelling ("SIP/2.0/TLS host...", one
    space) without the regex; None for any other."""
    transport, _, rest = value[8:].partition(" ")
    if value.startswith("SIP/2.0/") and transport in _TRANSPORTS and rest and not rest[0].isspace():
        return transport, rest
    return None


MAX_CSEQ: Final = 2**31 - 1


@dataclass(frozen=True, slots=True, init=False)
class CSeq:
    number: int
    method: str

    def __init__(self, number: int, method: str) -> None:
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "method", method)

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2 or not is_token(parts[1]):
            raise ParseError("bad CSeq")
        return CSeq(ascii_int(parts[0], "CSeq", MAX_CSEQ), parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


#: Parsed From, To, Contact (and other name-addr) values, and Vias.
_NAME_ADDRS: Final[Parsed[NameAddr]] = Parsed(4096)
_VIAS: Final[Parsed[Via]] = Parsed(4096)
