"""SIP and SIPS URIs (RFC 3261 section 19.1) and tel URIs kept opaque.

    sip:user:password@host:port;uri-parameters?headers

Escapes (%XX) are decoded in the user part and parameters for comparison and
kept as written for serialization, so a URI round-trips byte for byte.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int

_HOST: Final = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?)$")
SCHEMES: Final = ("sip", "sips")
#: RFC 3986 section 3.1 (RFC 3261 section 25.1 ``scheme``).
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"[A-Za-z0-9\-_.!~*'()]"
#: RFC 3261 section 25.1: ``user`` and ``password`` (``?``, ``;`` and ``/`` are
#: legal in a user part, RFC 4475 section 3.1.1.2).
_USER: Final = re.compile(rf"(?:{_UNRESERVED}|{_ESCAPED}|[&=+$,;?/])+")
_PASSWORD: Final = re.compile(rf"(?:{_UNRESERVED}|{_ESCAPED}|[&=+$,])*")


def _split_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        params[_unescaped(name).lower()] = _unescaped(value) if eq else None
    return params


def _unescaped(text: str) -> str:
    """``text`` with its %XX escapes decoded; ``unquote`` (interpreted, slow) only
    when there is one."""
    return unquote(text) if "%" in text else text


@dataclass(frozen=True, slots=True, init=False)
class SipUri:
    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, compare=False)
    headers: str | None = field(default=None, compare=False)
    #: The text as received, for an exact round trip.
    raw: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str, *, shared: bool = True) -> SipUri:
        """The URI ``text`` names. Parsed URIs are shared (the same text comes back
        in every message of a transaction and dialog): never change one's ``params``.

        ``shared=False`` parses it anew, outside the cache: for a text that comes
        back to no other dialog (a Route naming one dialog), which would otherwise
        push the ones that do (users, phones' contacts) out of it."""
        return _parse(text) if shared and len(text) <= MAX_CACHED_TEXT else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME.fullmatch(scheme):
            raise ParseError("bad URI")
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise ParseError("unsupported URI scheme", 416)
        # userinfo ends at the first "@": neither host, parameters nor headers
        # may hold one unescaped, while the user part may hold "?" and ";".
        userinfo, at, hostpart = rest.partition("@")
        if not at:
            hostpart, userinfo = rest, ""
        hostpart, _, headers = hostpart.partition("?")
        hostport, _, param_text = hostpart.partition(";")
        user = password = None
        if at:
            user, _, pw = userinfo.partition(":")
            password = pw if ":" in userinfo else None
            if not _USER.fullmatch(user) or not _PASSWORD.fullmatch(password or ""):
                raise ParseError("bad URI userinfo")
        host, port = _host_port(hostport)
        return SipUri(
            scheme, host, user, password, port, _split_params(param_text), headers or None, text
        )

    def __init__(
        self,
        scheme: str,
        host: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
        raw: str = "",
    ) -> None:
        # Written out: compiled with the module, where the generated one would
        # run interpreted (a URI not in the cache is parsed with its message).
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "params", {} if params is None else params)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "raw", raw)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else _unescaped(self.user)

    @property
    def host_key(self) -> str:
        """The host as compared: lower case, IPv6 without brackets."""
        return self.host.strip("[]").lower()

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or ("tls" if self.scheme == "sips" else "udp")).lower()

    @property
    def aor(self) -> str:
        """The address of record: ``sip:user@host``, lower-cased host, no port or params."""
        user = f"{self.user_unescaped}@" if self.user else ""
        return f"sip:{user}{self.host_key}"

    def __str__(self) -> str:
        if self.raw:
            return self.raw
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user + (f":{self.password}" if self.password is not None else "") + "@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        for name, value in self.params.items():
            out += f";{name}" + (f"={value}" if value is not None else "")
        if self.headers:
            out += f"?{self.headers}"
        return out

    def with_params(self, **params: str | None) -> SipUri:
        merged = {**self.params, **params}
        return SipUri(
            self.scheme, self.host, self.user, self.password, self.port, merged, self.headers
        )


#: The longest text a cache of parsed values keeps (this one of URIs, and
#: ``headers.Parsed``): a phone's are far shorter, and the caches' memory stays
#: bounded whatever strangers send.
MAX_CACHED_TEXT: Final = 512


#: URIs parsed, by text: repeating ones (users, contacts, request URIs) are many
#: fewer than this; a URI unique to a dialog is parsed with ``shared=False``.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> SipUri:
    return SipUri._parse(text)


def _host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError("bad IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise ParseError("bad IPv6 reference") from exc
    else:
        host, _, port_text = text.partition(":")
        rest = f":{port_text}" if port_text else ""
    if not _HOST.match(host):
        raise ParseError("bad host")
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise ParseError("bad port")
    port = ascii_int(rest[1:], "port", 65535)
    if port == 0:
        raise ParseError("bad port")
    return host, port
