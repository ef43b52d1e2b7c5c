"""Key agreement for ZRTP DH mode (RFC 6189 sections 4.4.1, 5.1.5).

One interface for every type: :func:`generate` gives a :class:`KeyPair`
whose ``public_value`` goes in DHPart1/2 (pvr/pvi) and whose ``agree()``
turns the peer's public value into DHResult, refusing values that would
weaken the exchange (``ErrorCode.BAD_PUBLIC_VALUE``).

- DH2k, DH3k: RFC 3526 groups 14 and 15, generator 2, a private exponent of
  twice the AES key length (section 5.1.5), values as fixed-length big-endian.
  Plain ``pow``: cryptography's finite-field DH is deprecated.
- EC25, EC38: NIST P-256 / P-384; pv is x || y, DHResult the x coordinate.
- X255: X25519 (RFC 7748), as bzrtp and Linphone offer it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from quietwire.protocols.zrtp.algorithms import KeyAgreementType

# RFC 3526 section 3 (2048-bit MODP group, id 14) and section 4 (3072-bit, id 15).
_MODP_2048 = (
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74 "
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437 "
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED "
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05 "
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB "
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B "
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718 "
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"
)
_MODP_3072 = (
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74 "
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437 "
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED "
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05 "
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB "
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B "
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718 "
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33 "
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7 "
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864 "
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2 "
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"
)
MODP_PRIMES = {
    KeyAgreementType.DH2k: int(_MODP_2048.replace(" ", ""), 16),
    KeyAgreementType.DH3k: int(_MODP_3072.replace(" ", ""), 16),
}
GENERATOR = 2
_CURVES: dict[KeyAgreementType, ec.EllipticCurve] = {
    KeyAgreementType.EC25: ec.SECP256R1(),
    KeyAgreementType.EC38: ec.SECP384R1(),
}


class BadPublicValue(ValueError):
    """The peer's pv is malformed or would weaken the exchange (0, 1, p-1, off-curve...)."""


class KeyPair(Protocol):
    @property
    def public_value(self) -> bytes:
        """pvi or pvr as DHPart carries it."""
        ...

    def agree(self, peer_public_value: bytes) -> bytes:
        """DHResult with the peer's pv; raises :class:`BadPublicValue`."""
        ...


@dataclass(frozen=True, slots=True)
class _FiniteField:
    prime: int
    exponent: int = field(repr=False)
    public_value: bytes

    def agree(self, peer_public_value: bytes) -> bytes:
        size = (self.prime.bit_length() + 7) // 8
        if len(peer_public_value) != size:
            raise BadPublicValue("public value length")
        peer = int.from_bytes(peer_public_value, "big")
        if not 1 < peer < self.prime - 1:
            raise BadPublicValue("public value out of range")
        return pow(peer, self.exponent, self.prime).to_bytes(size, "big")


@dataclass(frozen=True, slots=True)
class _Ecdh:
    private: ec.EllipticCurvePrivateKey = field(repr=False)
    public_value: bytes

    def agree(self, peer_public_value: bytes) -> bytes:
        curve = self.private.curve
        size = (curve.key_size + 7) // 8
        if len(peer_public_value) != 2 * size:
            raise BadPublicValue("public value length")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + peer_public_value)
        except ValueError as exc:
            raise BadPublicValue("point not on curve") from exc
        return self.private.exchange(ec.ECDH(), peer)


@dataclass(frozen=True, slots=True)
class _X25519:
    private: x25519.X25519PrivateKey = field(repr=False)
    public_value: bytes

    def agree(self, peer_public_value: bytes) -> bytes:
        if len(peer_public_value) != 32:
            raise BadPublicValue("public value length")
        try:
            return self.private.exchange(
                x25519.X25519PublicKey.from_public_bytes(peer_public_value)
            )
        except ValueError as exc:  # an all-zero result: a low-order point
            raise BadPublicValue("low-order point") from exc


def generate(kind: KeyAgreementType, exponent_bits: int = 256) -> KeyPair:
    """A fresh key pair; ``exponent_bits`` is twice the cipher key length (DH only)."""
    if kind in MODP_PRIMES:
        prime = MODP_PRIMES[kind]
        exponent = secrets.randbits(exponent_bits) | (1 << (exponent_bits - 1))
        size = (prime.bit_length() + 7) // 8
        return _FiniteField(prime, exponent, pow(GENERATOR, exponent, prime).to_bytes(size, "big"))
    if kind in _CURVES:
        private = ec.generate_private_key(_CURVES[kind])
        point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return _Ecdh(private, point[1:])
    if kind is KeyAgreementType.X255:
        key = x25519.X25519PrivateKey.generate()
        return _X25519(key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    raise ValueError(f"{kind.name} has no key pair")
