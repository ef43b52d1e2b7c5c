"""Algorithm types of ZRTP (RFC 6189 sections 5.1.2-5.1.6) and their negotiation (4.1.2).

Every type is named by its 4-character block as it appears in Hello and
Commit. Blocks we do not implement (N256, 2FS3, SK32, EC52, X448, Prsh...)
are kept as raw bytes when parsing, so a Hello round-trips exactly, and are
simply never chosen.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

Block = bytes  # a 4-byte algorithm type block
E = TypeVar("E", bound=enum.Enum)


class HashType(enum.Enum):
    S256 = b"S256"
    S384 = b"S384"

    @property
    def hashlib_name(self) -> str:
        return "sha256" if self is HashType.S256 else "sha384"

    @property
    def length(self) -> int:
        """Output length in bytes."""
        return 32 if self is HashType.S256 else 48

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()


class CipherType(enum.Enum):
    AES1 = b"AES1"

    @property
    def key_length(self) -> int:
        """Bytes of the SRTP and ZRTP keys (section 5.1.3)."""
        return 16


class AuthTagType(enum.Enum):
    HS32 = b"HS32"
    HS80 = b"HS80"

    @property
    def tag_bits(self) -> int:
        return 32 if self is AuthTagType.HS32 else 80


class KeyAgreementType(enum.Enum):
    DH3k = b"DH3k"
    DH2k = b"DH2k"
    EC25 = b"EC25"
    EC38 = b"EC38"
    X255 = b"X255"
    Mult = b"Mult"

    @property
    def public_value_length(self) -> int:
        """Bytes of pvi/pvr in DHPart1/2 (section 5.1.5); 0 for Multistream."""
        return _PV_LENGTH[self]

    @property
    def cost(self) -> int:
        """Relative computing cost, for "choose the faster" (section 4.1.2)."""
        return _COST[self]


_PV_LENGTH = {
    KeyAgreementType.DH3k: 384,
    KeyAgreementType.DH2k: 256,
    KeyAgreementType.EC25: 64,
    KeyAgreementType.EC38: 96,
    KeyAgreementType.X255: 32,
    KeyAgreementType.Mult: 0,
}
_COST = {
    KeyAgreementType.Mult: 0,
    KeyAgreementType.X255: 1,
    KeyAgreementType.EC25: 2,
    KeyAgreementType.DH2k: 3,
    KeyAgreementType.EC38: 4,
    KeyAgreementType.DH3k: 5,
}


class SasType(enum.Enum):
    B32 = b"B32 "
    B256 = b"B256"


#: Implied when a Hello does not list them (section 5.1: mandatory to implement).
MANDATORY: dict[type[enum.Enum], tuple[enum.Enum, ...]] = {
    HashType: (HashType.S256,),
    CipherType: (CipherType.AES1,),
    AuthTagType: (AuthTagType.HS32, AuthTagType.HS80),
    KeyAgreementType: (KeyAgreementType.DH3k, KeyAgreementType.Mult),
    SasType: (SasType.B32,),
}


@dataclass(frozen=True, slots=True)
class Offer:
    """The algorithm lists of one Hello, in preference order (raw 4-byte blocks)."""

    hashes: tuple[Block, ...] = (HashType.S256.value,)
    ciphers: tuple[Block, ...] = (CipherType.AES1.value,)
    auth_tags: tuple[Block, ...] = (AuthTagType.HS32.value, AuthTagType.HS80.value)
    key_agreements: tuple[Block, ...] = (KeyAgreementType.DH3k.value, KeyAgreementType.Mult.value)
    sas_types: tuple[Block, ...] = (SasType.B32.value,)

    def with_mandatory(self) -> Offer:
        """This offer with every mandatory algorithm listed (appended where missing).

        Some peers (bzrtp) do not imply unlisted mandatory algorithms, so a Hello
        without DH3k can leave them with nothing in common.
        """

        def listed(blocks: tuple[Block, ...], kind: type[enum.Enum]) -> tuple[Block, ...]:
            missing = [m.value for m in MANDATORY[kind] if m.value not in blocks]
            return (*blocks, *missing)[:7]

        return Offer(
            listed(self.hashes, HashType),
            listed(self.ciphers, CipherType),
            listed(self.auth_tags, AuthTagType),
            listed(self.key_agreements, KeyAgreementType),
            listed(self.sas_types, SasType),
        )


@dataclass(frozen=True, slots=True)
class Suite:
    """One negotiated choice of every algorithm type (carried in Commit)."""

    hash: HashType
    cipher: CipherType
    auth_tag: AuthTagType
    key_agreement: KeyAgreementType
    sas: SasType

    def __str__(self) -> str:
        """``AES1/HS80/X255/B32``: cipher, auth tag, key agreement, SAS type."""
        return "/".join(
            v.value.decode().strip()
            for v in (self.cipher, self.auth_tag, self.key_agreement, self.sas)
        )


class NoCommonAlgorithm(ValueError):
    def __init__(self, kind: type[enum.Enum]) -> None:
        super().__init__(f"no common {kind.__name__}")
        self.kind = kind


def _known(kind: type[E], blocks: Sequence[Block]) -> list[E]:
    found: list[E] = []
    for block in [*blocks, *(m.value for m in MANDATORY[kind])]:
        try:
            value = kind(block)
        except ValueError:
            continue
        if value not in found:
            found.append(value)
    return found


def common(kind: type[E], ours: Sequence[Block], theirs: Sequence[Block]) -> list[E]:
    """Our list (mandatory ones implied), in our order, less what the peer lacks."""
    peer = _known(kind, theirs)
    return [value for value in _known(kind, ours) if value in peer]


def negotiate(ours: Offer, theirs: Offer, *, multistream: bool = False) -> Suite:
    """Choose every algorithm as the Commit sender does (RFC 6189 section 4.1.2).

    Hash, cipher, auth tag and SAS: our most preferred that the peer supports.
    Key agreement: the faster of each side's most preferred common one (both
    sides reach the same answer); Multistream only when asked for.
    """

    def first(kind: type[E], a: Sequence[Block], b: Sequence[Block]) -> E:
        choices = common(kind, a, b)
        if not choices:
            raise NoCommonAlgorithm(kind)
        return choices[0]

    if multistream:
        if KeyAgreementType.Mult not in common(
            KeyAgreementType, ours.key_agreements, theirs.key_agreements
        ):
            raise NoCommonAlgorithm(KeyAgreementType)
        key_agreement = KeyAgreementType.Mult
    else:
        mine = [
            k
            for k in common(KeyAgreementType, ours.key_agreements, theirs.key_agreements)
            if k is not KeyAgreementType.Mult
        ]
        peers = [
            k
            for k in common(KeyAgreementType, theirs.key_agreements, ours.key_agreements)
            if k is not KeyAgreementType.Mult
        ]
        if not mine or not peers:
            raise NoCommonAlgorithm(KeyAgreementType)
        key_agreement = min(mine[0], peers[0], key=lambda k: k.cost)
    return Suite(
        hash=first(HashType, ours.hashes, theirs.hashes),
        cipher=first(CipherType, ours.ciphers, theirs.ciphers),
        auth_tag=first(AuthTagType, ours.auth_tags, theirs.auth_tags),
        key_agreement=key_agreement,
        sas=first(SasType, ours.sas_types, theirs.sas_types),
    )
