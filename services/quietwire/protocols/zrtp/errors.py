"""ZRTP errors: one ParseError for bad bytes, and the Error message codes (RFC 6189 section 5.9)."""

from __future__ import annotations

import enum


class ParseError(ValueError):
    """Bytes that are not a well-formed ZRTP packet or message (short fixed messages)."""


class ErrorCode(enum.IntEnum):
    """Integer error codes of the Error message (RFC 6189 section 5.9)."""

    MALFORMED_PACKET = 0x10
    CRITICAL_SOFTWARE_ERROR = 0x20
    UNSUPPORTED_VERSION = 0x30
    HELLO_COMPONENTS_MISMATCH = 0x40
    HASH_TYPE_NOT_SUPPORTED = 0x51
    CIPHER_TYPE_NOT_SUPPORTED = 0x52
    KEY_AGREEMENT_NOT_SUPPORTED = 0x53
    AUTH_TAG_NOT_SUPPORTED = 0x54
    SAS_SCHEME_NOT_SUPPORTED = 0x55
    NO_SHARED_SECRET = 0x56
    BAD_PUBLIC_VALUE = 0x61
    HVI_MISMATCH = 0x62
    UNTRUSTED_MITM = 0x63
    BAD_CONFIRM_MAC = 0x70
    NONCE_REUSE = 0x80
    EQUAL_ZIDS = 0x90
    SSRC_COLLISION = 0x91
    SERVICE_UNAVAILABLE = 0xA0
    PROTOCOL_TIMEOUT = 0xB0
    GOCLEAR_NOT_ALLOWED = 0x100

    @property
    def reason(self) -> str:
        """What the user is told when a call is not secure because of it."""
        return _REASONS[self]


_REASONS = {
    ErrorCode.MALFORMED_PACKET: "malformed ZRTP packet",
    ErrorCode.CRITICAL_SOFTWARE_ERROR: "critical software error",
    ErrorCode.UNSUPPORTED_VERSION: "unsupported ZRTP version",
    ErrorCode.HELLO_COMPONENTS_MISMATCH: "Hello components mismatch",
    ErrorCode.HASH_TYPE_NOT_SUPPORTED: "hash type not supported",
    ErrorCode.CIPHER_TYPE_NOT_SUPPORTED: "cipher type not supported",
    ErrorCode.KEY_AGREEMENT_NOT_SUPPORTED: "public key exchange not supported",
    ErrorCode.AUTH_TAG_NOT_SUPPORTED: "SRTP auth tag not supported",
    ErrorCode.SAS_SCHEME_NOT_SUPPORTED: "SAS rendering scheme not supported",
    ErrorCode.NO_SHARED_SECRET: "no shared secret available, DH mode required",
    ErrorCode.BAD_PUBLIC_VALUE: "DH error: bad public value",
    ErrorCode.HVI_MISMATCH: "DH error: hvi does not match the hashed data",
    ErrorCode.UNTRUSTED_MITM: "relayed SAS from an untrusted MiTM",
    ErrorCode.BAD_CONFIRM_MAC: "auth error: bad Confirm MAC",
    ErrorCode.NONCE_REUSE: "nonce reuse",
    ErrorCode.EQUAL_ZIDS: "equal ZIDs in Hello",
    ErrorCode.SSRC_COLLISION: "SSRC collision",
    ErrorCode.SERVICE_UNAVAILABLE: "service unavailable",
    ErrorCode.PROTOCOL_TIMEOUT: "protocol timeout",
    ErrorCode.GOCLEAR_NOT_ALLOWED: "GoClear received but not allowed",
}
