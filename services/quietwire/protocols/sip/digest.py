"""HTTP digest credentials for SIP (RFC 3261 section 22.4, RFC 8760).

``HA1`` stands in for a password: the registrar keeps it per algorithm and
never the password itself. Challenges and credentials are parsed and
formatted here; :class:`NonceMint` makes nonces that expire without storage.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, replace

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import split_list, unquote


class DigestAlgorithm(enum.Enum):
    """The ``algorithm`` parameter values quietwire accepts (RFC 8760 section 2.1)."""

    MD5 = "MD5"
    SHA_256 = "SHA-256"

    def hash(self, data: str) -> str:
        """``H(data)``: lowercase hex of the algorithm over the UTF-8 bytes."""
        name = "md5" if self is DigestAlgorithm.MD5 else "sha256"
        return hashlib.new(name, data.encode("utf-8"), usedforsecurity=False).hexdigest()


def ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """``HA1 = H(username ":" realm ":" password)`` (RFC 7616 section 3.4.2)."""
    return algorithm.hash(f"{username}:{realm}:{password}")


def _kd(algorithm: DigestAlgorithm, secret: str, data: str) -> str:
    return algorithm.hash(f"{secret}:{data}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 3261 22.4, RFC 8760)."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    opaque: str | None = None
    stale: bool = False
    qop: str = "auth"

    def __str__(self) -> str:
        parts = [f'realm="{self.realm}"', f'nonce="{self.nonce}"']
        if self.opaque is not None:
            parts.append(f'opaque="{self.opaque}"')
        parts += [f"algorithm={self.algorithm.value}", f'qop="{self.qop}"']
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
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

    @classmethod
    def parse(cls, value: str) -> Credentials:
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            raise ParseError("not a Digest credential", 401)
        params: dict[str, str] = {}
        for item in split_list(rest):
            name, eq, raw = item.partition("=")
            if not eq:
                raise ParseError("bad Digest parameter")
            raw = raw.strip()
            params[name.strip().lower()] = unquote(raw) if raw.startswith('"') else raw
        try:
            algorithm = DigestAlgorithm(params.get("algorithm", "MD5").upper())
        except ValueError as exc:
            raise ParseError("unsupported digest algorithm", 401) from exc
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise ParseError(f"Digest credentials lack {', '.join(missing)}")
        qop = params.get("qop")
        if qop is not None and (qop != "auth" or "cnonce" not in params or "nc" not in params):
            raise ParseError("bad Digest qop")
        return cls(
            params["username"],
            params["realm"],
            params["nonce"],
            params["uri"],
            params["response"].lower(),
            algorithm,
            qop,
            params.get("cnonce"),
            params.get("nc"),
            params.get("opaque"),
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
        ha2 = self.algorithm.hash(f"{method}:{self.uri}")
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
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ParseError("not a Digest challenge")
    params: dict[str, str] = {}
    for item in split_list(rest):
        name, _, raw = item.partition("=")
        raw = raw.strip()
        params[name.strip().lower()] = unquote(raw) if raw.startswith('"') else raw
    if "realm" not in params or "nonce" not in params:
        raise ParseError("Digest challenge lacks realm or nonce")
    try:
        algorithm = DigestAlgorithm(params.get("algorithm", "MD5").upper())
    except ValueError as exc:
        raise ParseError("unsupported digest algorithm") from exc
    return Challenge(
        params["realm"],
        params["nonce"],
        algorithm,
        params.get("opaque"),
        params.get("stale", "").lower() == "true",
        params.get("qop", "auth"),
    )


class NonceMint:
    """Nonces that carry their own age and integrity: ``time.random.mac`` (base64url).

    The registrar needs no storage to know a nonce is ours and fresh; replay of
    a nonce-count is the store's business (it remembers the highest ``nc``).
    """

    def __init__(self, secret: bytes, lifetime: float = 300.0) -> None:
        self.secret = secret
        self.lifetime = lifetime

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.secret, body, hashlib.sha256).digest()[:12]

    def mint(self, now: float) -> str:
        body = struct.pack("!Q", int(now * 1000)) + os.urandom(8)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode().rstrip("=")

    def check(self, nonce: str, now: float) -> NonceCheck:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, binascii.Error):
            return NonceCheck.FORGED
        if len(raw) != 28 or not hmac.compare_digest(self._mac(raw[:16]), raw[16:]):
            return NonceCheck.FORGED
        issued = struct.unpack("!Q", raw[:8])[0] / 1000
        if not issued - 5 <= now <= issued + self.lifetime:
            return NonceCheck.STALE
        return NonceCheck.FRESH


class NonceCheck(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    FORGED = "forged"
