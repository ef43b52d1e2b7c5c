"""HTTP digest credentials for SIP (RFC 3261 section 22.4, RFC 8760).

Only what the user store needs lives here so far: ``HA1``, the hash that
stands in for a password. The registrar keeps HA1 per algorithm and never
the password itself.
"""

from __future__ import annotations

import enum
import hashlib


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
