"""HTTP digest credentials for SIP (RFC 3261 section 22.4, RFC 8760).

``HA1`` stands in for a password: the registrar keeps it per algorithm and
never the password itself. Challenges and credentials are parsed and
formatted here; :mod:`.nonces` makes the nonces and keeps their counts.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from typing import Final

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import is_token
from quietwire.protocols.sip.uri import SipUri


class DigestAlgorithm(enum.Enum):
    """The ``algorithm`` parameter values quietwire accepts (RFC 8760 section 2.1)."""

    MD5 = "MD5"
    SHA_256 = "SHA-256"

    _value_: str

    def hash(self, data: str) -> str:
        """``H(data)``: lowercase hex of the algorithm over the UTF-8 bytes."""
        raw = data.encode("utf-8")
        if self is DigestAlgorithm.MD5:  # hashlib.new would look the name up each time
            return hashlib.md5(raw, usedforsecurity=False).hexdigest()
        return hashlib.sha256(raw, usedforsecurity=False).hexdigest()

    @property
    def hex_length(self) -> int:
        """Characters of a ``response`` (RFC 8760 section 2.3: the hash's length in LHEX)."""
        return 32 if self is DigestAlgorithm.MD5 else 64

    @property
    def token(self) -> str:
        """The parameter value: ``value`` without the Python-level property
        lookup of ``enum`` (every challenge writes it)."""
        return self._value_

    @property
    def nonce_code(self) -> int:
        """The byte naming the algorithm in a :class:`NonceMint` nonce."""
        return 1 if self is DigestAlgorithm.MD5 else 2


#: Upper bounds on parameter values, in characters. The RFCs leave them open;
#: these are far above what phones send (our nonces are 43) and keep what a
#: stranger makes us hash, compare and look up small.
LIMITS: Final = {"uri": 1024, "response": 64, "nc": 8}
MAX_VALUE: Final = 256
#: At most this many parameters, and this many characters in a whole credential.
MAX_PARAMS: Final = 16
MAX_CREDENTIALS: Final = 4096
#: Parameters that RFC 3261 section 25.1 (and RFC 7616 section 3.4) write only
#: as quoted strings; ``algorithm``, ``qop`` and ``nc`` are tokens, accepted
#: quoted too (RFC 7235 section 2.1: a parameter value is a token or a quoted-string).
_QUOTED: Final = ("username", "realm", "nonce", "uri", "response", "cnonce", "opaque")
#: RFC 3261 ``token`` (RFC 7230 ``1*tchar``).
_TCHARS = r"[A-Za-z0-9.!%*_+`'~-]+"
#: One ``auth-param`` and what follows it: a comma or the end (RFC 3261 section 25.1
#: ``quoted-string``: qdtext or quoted-pair, stricter: no control character but
#: HTAB, escaped or not, so none reaches a Redis key or a log line). Possessive
#: (Python 3.11): runs of plain characters taken whole, never backtracked into (the
#: two branches start differently, so there is only ever one way to match).
#: Group 1 is the whole item, for ``findall`` to tell where each one is.
_PARAM: Final = re.compile(
    rf"([ \t]*({_TCHARS})[ \t]*=[ \t]*"
    rf'(?:({_TCHARS})|"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]++|\\[\x20-\x7e])*+)")'
    r"[ \t]*(,|\Z))"
)
_BLANKS: Final = frozenset({" ", "\t"})
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
_REQUIRED: Final = ("username", "realm", "nonce", "uri", "response")
_NOT_EMPTY: Final = ("username", "realm", "nonce", "uri", "cnonce")
#: ``nc-value = 8LHEX`` (RFC 3261 section 25.1).
NC_LENGTH: Final = 8


def _is_lhex(text: str) -> bool:
    """``1*LHEX``: lower-case hex digits (RFC 3261 section 25.1)."""
    return _LHEX.fullmatch(text) is not None  # fewer instructions than str methods here


_LHEX: Final = re.compile(r"[0-9a-f]+")


def _digest_params(value: str) -> tuple[dict[str, str], set[str]]:
    """``Digest`` LWS ``name=value`` list: name → value (unescaped), and the
    names whose value was written as a token rather than a quoted-string.

    Duplicated names, empty list items, a value past its bound and anything
    outside the grammar raise :class:`ParseError`.
    """
    if len(value) > MAX_CREDENTIALS:
        raise ParseError("Digest credentials too long")
    # `[ \t]* "Digest" [ \t]+` in any case (str methods, not re: hot).
    scheme = value.lstrip(" \t")
    if not (scheme[:6].isascii() and scheme[:6].lower() == "digest" and scheme[6:7] in _BLANKS):
        raise ParseError("not a Digest credential")
    rest = scheme[6:].strip(" \t")
    items = _plain_items(rest) if _plain(rest) else None
    if items is None:
        items = _grammar_items(rest)
    params: dict[str, str] = {}
    tokens: set[str] = set()
    for name, raw, quoted in items:
        name = name.lower()
        if name in params:
            raise ParseError("duplicate Digest parameter")
        if len(raw) > LIMITS.get(name, MAX_VALUE):
            raise ParseError(f"Digest {name} too long")
        params[name] = raw
        if not quoted:
            tokens.add(name)
        if len(params) > MAX_PARAMS:
            raise ParseError("too many Digest parameters")
    return params, tokens


def _plain(text: str) -> bool:
    """No control character and no backslash (``isprintable()``, without ``\\``).
    ASCII text is read as bytes: ``str.isprintable`` asks the Unicode database
    about each character, and costs more than the rest of the parse's scans."""
    if not text.isascii():
        return text.isprintable() and "\\" not in text
    raw = text.encode("ascii")
    return len(raw.translate(None, _CONTROLS_AND_BACKSLASH)) == len(raw)


_CONTROLS_AND_BACKSLASH: Final = bytes(range(0x20)) + b"\x7f\\"


def _grammar_items(rest: str) -> list[tuple[str, str, bool]]:
    """Each ``name=value`` of ``rest`` by :data:`_PARAM`: (name, value unescaped, was quoted).

    Each item must start where the one before ended (an item ending in a comma
    is found there exactly when its text is there), the last at the end and
    without a comma."""
    items: list[tuple[str, str, bool]] = []
    consumed, end = 0, len(rest)
    for item, name, token, quoted_text, comma in _PARAM.findall(rest):
        if not (rest.startswith(item, consumed) if comma else consumed + len(item) == end):
            raise ParseError("bad Digest parameter")
        consumed += len(item)
        if consumed == end and comma:
            raise ParseError("bad Digest parameter")
        if token:
            items.append((name, token, False))
        else:  # a token is never empty: the quoted-string matched
            items.append((name, _unescape(quoted_text), True))
    if consumed != end:
        raise ParseError("bad Digest parameter")
    return items


def _plain_items(rest: str) -> list[tuple[str, str, bool]] | None:
    """What :func:`_grammar_items` finds, for text with no quoted-pair and no
    control character (tab included): read with ``str.find``, as a regex scan
    costs more than the rest of the parse. None at anything else, where the
    regex decides (and names the error)."""
    items: list[tuple[str, str, bool]] = []
    pos, end = 0, len(rest)
    while pos < end:
        eq = rest.find("=", pos)
        if eq < 0:
            return None
        name = rest[pos:eq].strip(" ")
        start = eq + 1
        while start < end and rest[start] == " ":
            start += 1
        if start < end and rest[start] == '"':
            close = rest.find('"', start + 1)
            if close < 0:
                return None
            raw = rest[start + 1 : close]
            quoted, after = True, close + 1
        else:
            comma = rest.find(",", start)
            raw = rest[start : end if comma < 0 else comma].rstrip(" ")
            if not is_token(raw):
                return None
            quoted, after = False, start + len(raw)
        while after < end and rest[after] == " ":
            after += 1
        if not is_token(name) or (after < end and rest[after] != ","):
            return None
        items.append((name, raw, quoted))
        pos = after + 1
        if pos == end:  # a comma ends the text
            return None
    return items


def _unescape(quoted: str) -> str:
    """A quoted-string's content without its quoted-pair backslashes (most have none)."""
    return _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted


def _algorithm(name: str, status: int) -> DigestAlgorithm:
    algorithm = _ALGORITHMS.get(name.upper())
    if algorithm is None:
        raise ParseError("unsupported digest algorithm", status)
    return algorithm


_ALGORITHMS: Final = {algorithm.value: algorithm for algorithm in DigestAlgorithm}


def ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """``HA1 = H(username ":" realm ":" password)`` (RFC 7616 section 3.4.2)."""
    return algorithm.hash(f"{username}:{realm}:{password}")


@functools.lru_cache(maxsize=256)
def _ha2(algorithm: str, method: str, uri: str) -> str:
    """``HA2 = H(method ":" uri)`` (RFC 7616 section 3.4.3), remembered: a
    registrar's REGISTERs all name one ``uri``, and a phone's requests a few.
    Keyed by the algorithm's token, which hashes in C (an enum member in Python)."""
    return _ALGORITHMS[algorithm].hash(f"{method}:{uri}")


def _kd(algorithm: DigestAlgorithm, secret: str, data: str) -> str:
    return algorithm.hash(f"{secret}:{data}")


@dataclass(frozen=True, slots=True, init=False)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 3261 22.4, RFC 8760)."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    opaque: str | None = None
    stale: bool = False
    qop: str = "auth"

    def __init__(
        self,
        realm: str,
        nonce: str,
        algorithm: DigestAlgorithm = DigestAlgorithm.MD5,
        opaque: str | None = None,
        stale: bool = False,
        qop: str = "auth",
    ) -> None:
        # Written out, as Credentials' (every challenge sent makes one).
        object.__setattr__(self, "realm", realm)
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "opaque", opaque)
        object.__setattr__(self, "stale", stale)
        object.__setattr__(self, "qop", qop)

    def __str__(self) -> str:
        opaque = "" if self.opaque is None else f', opaque="{self.opaque}"'
        stale = ", stale=TRUE" if self.stale else ""
        return (
            f'Digest realm="{self.realm}", nonce="{self.nonce}"{opaque}, '
            f'algorithm={self.algorithm.token}, qop="{self.qop}"{stale}'
        )


@dataclass(frozen=True, slots=True, init=False)
class Credentials:
    """An ``Authorization`` / ``Proxy-Authorization`` value, digest scheme."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    opaque: str | None = None

    def __init__(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        algorithm: DigestAlgorithm = DigestAlgorithm.MD5,
        qop: str | None = None,
        cnonce: str | None = None,
        nc: str | None = None,
        opaque: str | None = None,
    ) -> None:
        # Written out: compiled with the module, where the generated one would
        # run interpreted (a credential is parsed with every request that has one).
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "realm", realm)
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "qop", qop)
        object.__setattr__(self, "cnonce", cnonce)
        object.__setattr__(self, "nc", nc)
        object.__setattr__(self, "opaque", opaque)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """The strict grammar of RFC 3261 section 25.1 ``digest-response``, RFC 7616/8760.

        Every parameter at most once, each in its form and within its bound
        (:data:`LIMITS`); ``nc`` exactly 8 LHEX and not zero; ``response`` the
        algorithm's length in LHEX; ``qop`` only ``auth`` (the one we offer),
        with ``cnonce`` and ``nc``, and neither of them without it. A request
        algorithm we do not implement (``-sess``, SHA-512-256), ``userhash`` or
        ``username*`` is refused with 403: we never offered them.
        """
        text, tokens = _digest_params(value)
        for name in _QUOTED:
            if name in tokens:
                raise ParseError(f"Digest {name} must be a quoted string")
        if "username*" in text or text.get("userhash", "false").lower() != "false":
            raise ParseError("Digest username* and userhash not offered", 403)
        missing = [k for k in _REQUIRED if k not in text]
        if missing:
            raise ParseError(f"Digest credentials lack {', '.join(missing)}")
        for name in _NOT_EMPTY:
            if text.get(name) == "":
                raise ParseError(f"empty Digest {name}")
        algorithm = _algorithm(text.get("algorithm", "MD5"), 403)
        response = text["response"]
        if not _is_lhex(response) or len(response) != algorithm.hex_length:
            raise ParseError("bad Digest response")
        qop = text.get("qop")
        cnonce, nc = text.get("cnonce"), text.get("nc")
        if qop is None:
            if cnonce is not None or nc is not None:
                raise ParseError("Digest cnonce or nc without qop")
        elif qop.lower() != "auth":
            raise ParseError("Digest qop not offered", 403)
        elif cnonce is None or nc is None:
            raise ParseError("Digest qop without cnonce or nc")
        elif len(nc) != NC_LENGTH or not _is_lhex(nc) or nc == "00000000":
            raise ParseError("bad Digest nc")
        return Credentials(
            text["username"],
            text["realm"],
            text["nonce"],
            text["uri"],
            response,
            algorithm,
            qop,
            cnonce,
            nc,
            text.get("opaque"),
        )

    @property
    def nonce_count(self) -> int | None:
        if self.nc is None:
            return None
        try:
            return int(self.nc, 16)
        except ValueError:
            return None

    def expected_response(self, stored_ha1: str, method: str) -> str:
        """``response`` for ``stored_ha1`` (RFC 7616 section 3.4.1; RFC 2069 without qop)."""
        ha2 = _ha2(self.algorithm.token, method, self.uri)
        if self.qop == "auth":
            return _kd(
                self.algorithm, stored_ha1, f"{self.nonce}:{self.nc}:{self.cnonce}:{self.qop}:{ha2}"
            )
        return _kd(self.algorithm, stored_ha1, f"{self.nonce}:{ha2}")

    def matches(self, stored_ha1: str, method: str) -> bool:
        return hmac.compare_digest(self.expected_response(stored_ha1, method), self.response)


def client_credentials(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
) -> Credentials:
    """What a user agent answers a challenge with (the phone; tests)."""
    stored = ha1(challenge.algorithm, username, challenge.realm, password)
    draft = Credentials(
        username,
        challenge.realm,
        challenge.nonce,
        uri,
        "",
        challenge.algorithm,
        "auth",
        cnonce,
        f"{nc:08x}",
        challenge.opaque,
    )
    return replace(draft, response=draft.expected_response(stored, method))


def format_credentials(credentials: Credentials) -> str:
    c = credentials
    parts = [
        f'username="{c.username}"',
        f'realm="{c.realm}"',
        f'nonce="{c.nonce}"',
        f'uri="{c.uri}"',
        f'response="{c.response}"',
        f"algorithm={c.algorithm.value}",
    ]
    if c.qop:
        parts += [f"qop={c.qop}", f'cnonce="{c.cnonce}"', f"nc={c.nc}"]
    if c.opaque is not None:
        parts.append(f'opaque="{c.opaque}"')
    return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (the phone's side)."""
    params, _ = _digest_params(value)
    if "realm" not in params or "nonce" not in params:
        raise ParseError("Digest challenge lacks realm or nonce")
    return Challenge(
        params["realm"],
        params["nonce"],
        _algorithm(params.get("algorithm", "MD5"), 400),
        params.get("opaque"),
        params.get("stale", "").lower() == "true",
        params.get("qop", "auth"),
    )


def same_resource(digest_uri: str, request_uri: str) -> bool:
    """Does the credential's ``uri`` name the Request-URI's resource (RFC 7616 section 3.4.6)?

    Equal text, or SIP URIs equal by the rules of RFC 3261 section 19.1.4:
    user and password exactly (after unescaping), host without regard to
    case, the same port, ``transport``/``user``/``ttl``/``method``/``maddr``
    the same wherever either has them, other parameters the same where both
    have them, and the same headers.
    """
    if digest_uri == request_uri:
        return True
    try:
        a, b = SipUri.parse(digest_uri), SipUri.parse(request_uri)
    except ParseError:
        return False
    if (a.scheme, a.user_unescaped, a.password, a.host_key, a.port, a.headers) != (
        b.scheme,
        b.user_unescaped,
        b.password,
        b.host_key,
        b.port,
        b.headers,
    ):
        return False
    names = (a.params.keys() & b.params.keys()) | _URI_PARAMS_ALWAYS_COMPARED
    return all(_lower(a.params.get(n)) == _lower(b.params.get(n)) for n in names)


_URI_PARAMS_ALWAYS_COMPARED = frozenset({"transport", "user", "ttl", "method", "maddr"})


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()
