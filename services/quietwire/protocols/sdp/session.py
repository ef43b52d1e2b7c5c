"""Session descriptions (RFC 8866) that keep every line they do not understand.

A description is its session-level lines and its media sections, each a list
of ``(type, value)`` lines in the order received, so serialization gives the
same text back. Typed views read and rewrite what quietwire needs: connection
data, media ports and formats, ``a=rtcp`` (RFC 3605), ``a=rtcp-mux`` (RFC
5761), ``a=zrtp-hash`` (RFC 6189 section 8.1), ``a=crypto`` (RFC 4568) and
``a=fingerprint`` (RFC 8122).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"^([a-z])=([^\r]*)$")
MAX_SDP_BYTES = 32 * 1024
_DIGITS = re.compile(r"[0-9]{1,10}")


class ParseError(ValueError):
    """Text that is not a session description."""


def _number(text: str, what: str, maximum: int) -> int:
    """ASCII digits only (RFC 8866 section 9 ``DIGIT``: ``int`` also takes ``²``)."""
    if not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise ParseError(f"bad {what}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=IN IP4 192.0.2.4`` (RFC 8866 section 5.7)."""

    address: str
    address_type: str = "IP4"
    network_type: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise ParseError("bad c= line")
        network_type, address_type, address = parts
        return cls(address.split("/")[0], address_type, network_type)

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}"


@dataclass(frozen=True, slots=True)
class Crypto:
    """``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:...`` (RFC 4568 section 9.1)."""

    tag: int
    suite: str
    key_params: str

    @classmethod
    def parse(cls, value: str) -> Crypto:
        parts = value.split(maxsplit=2)
        if len(parts) < 3:
            raise ParseError("bad a=crypto")
        return cls(_number(parts[0], "a=crypto tag", 999_999_999), parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class Fingerprint:
    hash_function: str
    value: str


def _attributes(lines: list[tuple[str, str]], name: str) -> list[str | None]:
    found: list[str | None] = []
    for kind, value in lines:
        if kind != "a":
            continue
        attr, colon, rest = value.partition(":")
        if attr == name:
            found.append(rest if colon else None)
    return found


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    protocol: str
    formats: list[str]
    port_count: int | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise ParseError("bad m= line")
        port_text, slash, count = parts[1].partition("/")
        port = _number(port_text, "m= port", 65535)
        port_count = _number(count, "m= port count", 65535) if slash else None
        return cls(parts[0], port, parts[2], parts[3:], port_count)

    @property
    def m_line(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        return " ".join([self.media, port, self.protocol, *self.formats])

    def attributes(self, name: str) -> list[str | None]:
        return _attributes(self.lines, name)

    def attribute(self, name: str) -> str | None:
        values = self.attributes(name)
        return values[0] if values else None

    def has_attribute(self, name: str) -> bool:
        return bool(self.attributes(name))

    def set_attribute(self, name: str, value: str | None) -> None:
        """Replace every ``a=name`` by one (appended if there was none)."""
        self.remove_attribute(name)
        self.lines.append(("a", name if value is None else f"{name}:{value}"))

    def remove_attribute(self, name: str) -> None:
        self.lines = [
            (k, v) for k, v in self.lines if not (k == "a" and v.partition(":")[0] == name)
        ]

    @property
    def connection(self) -> Connection | None:
        value = next((v for k, v in self.lines if k == "c"), None)
        return Connection.parse(value) if value is not None else None

    def set_connection(self, connection: Connection) -> None:
        for i, (kind, _) in enumerate(self.lines):
            if kind == "c":
                self.lines[i] = ("c", str(connection))
                return
        at = next((i for i, (k, _) in enumerate(self.lines) if k not in ("i",)), len(self.lines))
        self.lines.insert(at, ("c", str(connection)))

    @property
    def rtcp_port(self) -> int | None:
        """The port of ``a=rtcp`` (RFC 3605), if present."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        return _number((value.split() or [""])[0], "a=rtcp", 65535)

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @property
    def zrtp_hash(self) -> str | None:
        """``a=zrtp-hash:1.10 <64 hex>`` (RFC 6189 section 8.1), version included."""
        return self.attribute("zrtp-hash")

    @property
    def crypto(self) -> list[Crypto]:
        return [Crypto.parse(v) for v in self.attributes("crypto") if v is not None]

    @property
    def fingerprints(self) -> list[Fingerprint]:
        found = []
        for value in self.attributes("fingerprint"):
            parts = (value or "").split()
            if len(parts) != 2:
                raise ParseError("bad a=fingerprint")
            found.append(Fingerprint(parts[0], parts[1]))
        return found

    @property
    def direction(self) -> str:
        for name in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if self.has_attribute(name):
                return name
        return "sendrecv"


@dataclass(slots=True)
class SessionDescription:
    lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        if isinstance(data, bytes):
            if len(data) > MAX_SDP_BYTES:
                raise ParseError("SDP too large")
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ParseError("SDP is not UTF-8") from exc
        sdp = cls()
        for raw in re.split(r"\r?\n", data):
            if not raw:
                continue
            match = _LINE.match(raw)
            if not match:
                raise ParseError("bad SDP line")
            kind, value = match.groups()
            if kind == "m":
                sdp.media.append(MediaDescription.parse_m_line(value))
            elif sdp.media:
                sdp.media[-1].lines.append((kind, value))
            else:
                sdp.lines.append((kind, value))
        if not sdp.lines or sdp.lines[0] != ("v", "0"):
            raise ParseError("SDP must start with v=0")
        return sdp

    def serialize(self) -> bytes:
        out = [f"{k}={v}" for k, v in self.lines]
        for m in self.media:
            out.append(f"m={m.m_line}")
            out += [f"{k}={v}" for k, v in m.lines]
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    @property
    def connection(self) -> Connection | None:
        value = next((v for k, v in self.lines if k == "c"), None)
        return Connection.parse(value) if value is not None else None

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """The connection that applies to ``media``: its own c=, else the session's."""
        return media.connection or self.connection

    def attributes(self, name: str) -> list[str | None]:
        return _attributes(self.lines, name)
