"""Reading the peer's choices: its Hello offer, its Commit suite, and Commit contention."""

from __future__ import annotations

import enum

from quietwire.protocols.zrtp.algorithms import (
    AuthTagType,
    CipherType,
    HashType,
    KeyAgreementType,
    Offer,
    SasType,
    Suite,
)
from quietwire.protocols.zrtp.errors import ErrorCode
from quietwire.protocols.zrtp.messages import Commit, Hello


class Unsupported(ValueError):
    """The peer's Commit names an algorithm we do not implement."""

    def __init__(self, code: ErrorCode, block: bytes) -> None:
        super().__init__(block)
        self.code, self.block = code, block


NO_COMMON_CODE = {
    HashType: ErrorCode.HASH_TYPE_NOT_SUPPORTED,
    CipherType: ErrorCode.CIPHER_TYPE_NOT_SUPPORTED,
    AuthTagType: ErrorCode.AUTH_TAG_NOT_SUPPORTED,
    KeyAgreementType: ErrorCode.KEY_AGREEMENT_NOT_SUPPORTED,
    SasType: ErrorCode.SAS_SCHEME_NOT_SUPPORTED,
}


def suite_of(commit: Commit) -> Suite:
    def pick(kind: type[enum.Enum], block: bytes) -> enum.Enum:
        try:
            return kind(block)
        except ValueError:
            raise Unsupported(NO_COMMON_CODE[kind], block) from None

    return Suite(
        hash=pick(HashType, commit.hash),  # type: ignore[arg-type]
        cipher=pick(CipherType, commit.cipher),  # type: ignore[arg-type]
        auth_tag=pick(AuthTagType, commit.auth_tag),  # type: ignore[arg-type]
        key_agreement=pick(KeyAgreementType, commit.key_agreement),  # type: ignore[arg-type]
        sas=pick(SasType, commit.sas),  # type: ignore[arg-type]
    )


def offer_of(hello: Hello) -> Offer:
    return Offer(
        hello.hashes, hello.ciphers, hello.auth_tags, hello.key_agreements, hello.sas_types
    )


def commit_wins(ours: Commit, theirs: Commit) -> bool:
    """Commit contention (section 4.2): does our Commit beat the peer's?"""
    if ours.is_dh_mode != theirs.is_dh_mode:
        return ours.is_dh_mode
    if ours.is_dh_mode:
        return ours.hvi > theirs.hvi
    return ours.nonce > theirs.nonce
