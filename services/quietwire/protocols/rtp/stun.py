"""STUN Binding requests on a media port, as far as a relay needs them to latch a leg.

A relay may take a STUN request as proof of where a phone is only when the
request proves it knows the ICE credentials that the phones exchanged over
signaling (RFC 8445 section 7.2.2): a USERNAME ``<receiver ufrag>:<sender
ufrag>`` and a MESSAGE-INTEGRITY keyed with the receiver's ``ice-pwd``
(short-term credentials, RFC 5389 section 10.1.2 and 15.4). Anything else
shaped like STUN — a 20-byte header, a request without ICE, a classic RFC 3489
packet without the magic cookie — is forwarded as media, never proof.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from quietwire.protocols.rtp.errors import ParseError

#: RFC 5389 section 6.
HEADER_LENGTH = 20
MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BINDING_REQUEST = 0x0001
#: Attribute types (RFC 5389 section 18.2).
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
#: HMAC-SHA1 (RFC 5389 section 15.4).
INTEGRITY_LENGTH = 20
MAX_USERNAME = 513


@dataclass(frozen=True, slots=True)
class IceCredentials:
    """One phone's ``a=ice-ufrag`` and ``a=ice-pwd`` (RFC 8839 section 5.4)."""

    ufrag: str
    pwd: str

    def __repr__(self) -> str:
        return f"IceCredentials(ufrag={self.ufrag!r}, pwd=...)"


@dataclass(frozen=True, slots=True)
class StunRequest:
    """A Binding request's USERNAME and the bytes its MESSAGE-INTEGRITY covers."""

    transaction_id: bytes
    username: str
    integrity: bytes
    #: The message up to MESSAGE-INTEGRITY, its length field covering the
    #: attribute (RFC 5389 section 15.4): the HMAC input.
    signed: bytes

    @classmethod
    def parse(cls, data: bytes) -> StunRequest:
        """A Binding request with the magic cookie, a USERNAME and a MESSAGE-INTEGRITY."""
        if len(data) < HEADER_LENGTH or data[4:8] != MAGIC_COOKIE:
            raise ParseError("not a STUN message")
        kind, length = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        if kind != BINDING_REQUEST or length % 4 or HEADER_LENGTH + length != len(data):
            raise ParseError("not a STUN Binding request")
        username: bytes | None = None
        offset = HEADER_LENGTH
        while offset + 4 <= len(data):
            attribute = int.from_bytes(data[offset : offset + 2], "big")
            size = int.from_bytes(data[offset + 2 : offset + 4], "big")
            value = data[offset + 4 : offset + 4 + size]
            if len(value) != size:
                raise ParseError("truncated STUN attribute")
            if attribute == USERNAME and username is None:
                username = value
            elif attribute == MESSAGE_INTEGRITY:
                if size != INTEGRITY_LENGTH or username is None:
                    raise ParseError("bad STUN MESSAGE-INTEGRITY")
                end = offset + 4 + size
                signed = data[:2] + (end - HEADER_LENGTH).to_bytes(2, "big") + data[4:offset]
                return cls(data[8:20], _text(username), value, signed)
            offset += 4 + size + (-size % 4)
        raise ParseError("STUN request without MESSAGE-INTEGRITY")

    def proves(self, username: str, key: str) -> bool:
        """Whether it names ``username`` and its integrity holds under ``key`` (the
        receiver's ice-pwd; SASLprep is the identity on ICE's ASCII passwords)."""
        named = hmac.compare_digest(self.username.encode(), username.encode())
        signed = hmac.compare_digest(self.integrity, hmac.digest(key.encode(), self.signed, "sha1"))
        return named and signed


def _text(value: bytes) -> str:
    if len(value) > MAX_USERNAME:
        raise ParseError("STUN USERNAME too long")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("STUN USERNAME not UTF-8") from None
