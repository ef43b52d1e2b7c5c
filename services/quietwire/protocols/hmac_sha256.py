"""HMAC-SHA-256 with its key schedule done once (RFC 2104 section 4).

``hmac.digest`` fetches the algorithm and hashes the padded key again on every
call; a MAC computed per request (nonces, source keys) pays for that more than
for the hashing. RFC 2104 section 4 suggests keeping the hash states after
``K XOR ipad`` and ``K XOR opad`` instead: each MAC then copies two states. The
MAC is the same one ``hmac.digest(key, prefix + data, "sha256")`` gives.
"""

from __future__ import annotations

import hashlib
from typing import Final

#: SHA-256's block length ``B`` in bytes (RFC 2104 section 2).
B: Final = 64
_IPAD: Final = bytes(0x36 for _ in range(B))
_OPAD: Final = bytes(0x5C for _ in range(B))


def _xor(key: bytes, pad: bytes) -> bytes:
    return bytes(k ^ p for k, p in zip(key, pad, strict=True))


class HmacSha256:
    """HMAC-SHA-256 under one key, of messages that all start with ``prefix``.

    Holds hash states, never the key itself.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > B:  # RFC 2104 section 2: a longer key is hashed first
            key = hashlib.sha256(key).digest()
        key = key.ljust(B, b"\0")
        self._inner = hashlib.sha256(_xor(key, _IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(_xor(key, _OPAD))

    def digest(self, data: bytes) -> bytes:
        """``HMAC(key, prefix || data)``."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
