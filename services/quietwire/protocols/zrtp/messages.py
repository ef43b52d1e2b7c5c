"""Every ZRTP message of RFC 6189 section 5, as frozen dataclasses.

A message is ``0x505a``, its length in 32-bit words (counting preamble,
length and the type block), an 8-byte type block and a body (section 5.2).
:func:`parse_message` dispatches on the type block; each class's
``serialize()`` gives the exact bytes back. Messages that end in a MAC keep
it as ``mac``; :meth:`mac_input` is what the MAC covers (the message up to
the MAC). Nothing here holds keys: the engine computes and checks MACs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from quietwire.protocols.zrtp.algorithms import Block, KeyAgreementType
from quietwire.protocols.zrtp.errors import ParseError

PREAMBLE = 0x505A
VERSION = b"1.10"
MAC_LENGTH = 8
HASH_IMAGE_LENGTH = 32
ZID_LENGTH = 12
MAX_ALGORITHMS = 7


def _take(data: bytes, offset: int, length: int) -> tuple[bytes, int]:
    end = offset + length
    if end > len(data):
        raise ParseError("message truncated")
    return data[offset:end], end


class Message:
    """Base of every message: the envelope of section 5.2."""

    TYPE: ClassVar[bytes]

    def body(self) -> bytes:
        return b""

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        if body:
            raise ParseError("unexpected message body")
        return cls()

    def serialize(self) -> bytes:
        body = self.body()
        return struct.pack("!HH", PREAMBLE, (12 + len(body)) // 4) + self.TYPE + body

    @property
    def mac_input(self) -> bytes:
        """The bytes a trailing MAC covers: the message without its last 8 bytes."""
        return self.serialize()[:-MAC_LENGTH]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Section 5.2: sent first; carries H3, the ZID and the algorithm lists."""

    TYPE: ClassVar[bytes] = b"Hello   "
    client_id: bytes
    h3: bytes
    zid: bytes
    hashes: tuple[Block, ...] = ()
    ciphers: tuple[Block, ...] = ()
    auth_tags: tuple[Block, ...] = ()
    key_agreements: tuple[Block, ...] = ()
    sas_types: tuple[Block, ...] = ()
    signature_capable: bool = False
    mitm: bool = False
    passive: bool = False
    version: bytes = VERSION
    mac: bytes = bytes(MAC_LENGTH)

    def body(self) -> bytes:
        lists = (self.hashes, self.ciphers, self.auth_tags, self.key_agreements, self.sas_types)
        hc, cc, ac, kc, sc = (len(x) for x in lists)
        flags = self.signature_capable << 6 | self.mitm << 5 | self.passive << 4
        counts = struct.pack("!BBBB", flags, hc, cc << 4 | ac, kc << 4 | sc)
        return (
            self.version
            + self.client_id.ljust(16, b"\0")[:16]
            + self.h3
            + self.zid
            + counts
            + b"".join(b"".join(x) for x in lists)
            + self.mac
        )

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        version, at = _take(body, 0, 4)
        client_id, at = _take(body, at, 16)
        h3, at = _take(body, at, HASH_IMAGE_LENGTH)
        zid, at = _take(body, at, ZID_LENGTH)
        counts, at = _take(body, at, 4)
        flags, hc, ca, ks = counts
        sizes = (hc & 0x0F, ca >> 4, ca & 0x0F, ks >> 4, ks & 0x0F)
        if any(n > MAX_ALGORITHMS for n in sizes):
            raise ParseError("too many algorithms in Hello")
        lists: list[tuple[bytes, ...]] = []
        for count in sizes:
            blocks, at = _take(body, at, 4 * count)
            lists.append(tuple(blocks[i : i + 4] for i in range(0, len(blocks), 4)))
        mac, at = _take(body, at, MAC_LENGTH)
        if at != len(body):
            raise ParseError("Hello length mismatch")
        return cls(
            client_id=client_id,
            h3=h3,
            zid=zid,
            hashes=lists[0],
            ciphers=lists[1],
            auth_tags=lists[2],
            key_agreements=lists[3],
            sas_types=lists[4],
            signature_capable=bool(flags & 0x40),
            mitm=bool(flags & 0x20),
            passive=bool(flags & 0x10),
            version=version,
            mac=mac,
        )


@dataclass(frozen=True, slots=True)
class HelloACK(Message):
    TYPE: ClassVar[bytes] = b"HelloACK"


@dataclass(frozen=True, slots=True)
class Commit(Message):
    """Section 5.4: the initiator's choice; ``hvi`` in DH mode, ``nonce`` in Multistream."""

    TYPE: ClassVar[bytes] = b"Commit  "
    h2: bytes
    zid: bytes
    hash: Block
    cipher: Block
    auth_tag: Block
    key_agreement: Block
    sas: Block
    hvi: bytes = b""
    nonce: bytes = b""
    key_id: bytes = b""
    mac: bytes = bytes(MAC_LENGTH)

    @property
    def is_dh_mode(self) -> bool:
        return self.key_agreement not in (KeyAgreementType.Mult.value, b"Prsh")

    def body(self) -> bytes:
        return (
            self.h2
            + self.zid
            + self.hash
            + self.cipher
            + self.auth_tag
            + self.key_agreement
            + self.sas
            + self.hvi
            + self.nonce
            + self.key_id
            + self.mac
        )

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        h2, at = _take(body, 0, HASH_IMAGE_LENGTH)
        zid, at = _take(body, at, ZID_LENGTH)
        blocks, at = _take(body, at, 20)
        hash_, cipher, auth, ka, sas = (blocks[i : i + 4] for i in range(0, 20, 4))
        hvi = nonce = key_id = b""
        if ka == KeyAgreementType.Mult.value:
            nonce, at = _take(body, at, 16)
        elif ka == b"Prsh":
            nonce, at = _take(body, at, 16)
            key_id, at = _take(body, at, 8)
        else:
            hvi, at = _take(body, at, 32)
        mac, at = _take(body, at, MAC_LENGTH)
        if at != len(body):
            raise ParseError("Commit length mismatch")
        return cls(h2, zid, hash_, cipher, auth, ka, sas, hvi, nonce, key_id, mac)


@dataclass(frozen=True, slots=True)
class _DHPart(Message):
    """Sections 5.5 and 5.6: H1, the retained-secret IDs, the public value."""

    h1: bytes
    rs1_id: bytes
    rs2_id: bytes
    aux_id: bytes
    pbx_id: bytes
    pv: bytes
    mac: bytes = bytes(MAC_LENGTH)

    def body(self) -> bytes:
        return self.h1 + self.rs1_id + self.rs2_id + self.aux_id + self.pbx_id + self.pv + self.mac

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        h1, at = _take(body, 0, HASH_IMAGE_LENGTH)
        ids = []
        for _ in range(4):
            value, at = _take(body, at, 8)
            ids.append(value)
        pv_length = len(body) - at - MAC_LENGTH
        if pv_length <= 0 or pv_length % 4:
            raise ParseError("DHPart public value length")
        pv, at = _take(body, at, pv_length)
        mac, _ = _take(body, at, MAC_LENGTH)
        return cls(h1, ids[0], ids[1], ids[2], ids[3], pv, mac)


@dataclass(frozen=True, slots=True)
class DHPart1(_DHPart):
    TYPE: ClassVar[bytes] = b"DHPart1 "


@dataclass(frozen=True, slots=True)
class DHPart2(_DHPart):
    TYPE: ClassVar[bytes] = b"DHPart2 "


@dataclass(frozen=True, slots=True)
class _Confirm(Message):
    """Section 5.7: confirm_mac, the CFB IV, and the encrypted :class:`ConfirmPlaintext`."""

    confirm_mac: bytes
    cfb_iv: bytes
    encrypted: bytes

    def body(self) -> bytes:
        return self.confirm_mac + self.cfb_iv + self.encrypted

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        confirm_mac, at = _take(body, 0, MAC_LENGTH)
        iv, at = _take(body, at, 16)
        if len(body) - at < ConfirmPlaintext.MIN_LENGTH:
            raise ParseError("Confirm too short")
        return cls(confirm_mac, iv, body[at:])


@dataclass(frozen=True, slots=True)
class Confirm1(_Confirm):
    TYPE: ClassVar[bytes] = b"Confirm1"


@dataclass(frozen=True, slots=True)
class Confirm2(_Confirm):
    TYPE: ClassVar[bytes] = b"Confirm2"


@dataclass(frozen=True, slots=True)
class ConfirmPlaintext:
    """The encrypted part of Confirm1/2 (section 5.7), once decrypted."""

    MIN_LENGTH: ClassVar[int] = HASH_IMAGE_LENGTH + 8

    h0: bytes
    #: E: PBX enrollment, V: SAS verified, A: GoClear allowed, D: disclosure.
    pbx_enrollment: bool = False
    sas_verified: bool = False
    allow_clear: bool = False
    disclosure: bool = False
    #: Seconds the peer should keep the new retained secret; 0xFFFFFFFF = forever.
    cache_expiration: int = 0xFFFFFFFF
    signature: bytes = b""

    def serialize(self) -> bytes:
        flags = (
            self.pbx_enrollment << 3 | self.sas_verified << 2 | self.allow_clear << 1
        ) | self.disclosure
        word = (len(self.signature) // 4) << 8 | flags
        return self.h0 + struct.pack("!II", word, self.cache_expiration) + self.signature

    @classmethod
    def parse(cls, data: bytes) -> ConfirmPlaintext:
        h0, at = _take(data, 0, HASH_IMAGE_LENGTH)
        raw, at = _take(data, at, 8)
        word, expiration = struct.unpack("!II", raw)
        signature, at = _take(data, at, 4 * ((word >> 8) & 0x1FF))
        if at != len(data):
            raise ParseError("Confirm length mismatch")
        return cls(
            h0=h0,
            pbx_enrollment=bool(word & 0x08),
            sas_verified=bool(word & 0x04),
            allow_clear=bool(word & 0x02),
            disclosure=bool(word & 0x01),
            cache_expiration=expiration,
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class Conf2ACK(Message):
    TYPE: ClassVar[bytes] = b"Conf2ACK"


@dataclass(frozen=True, slots=True)
class Error(Message):
    """Section 5.9: why the other side gave up."""

    TYPE: ClassVar[bytes] = b"Error   "
    code: int

    def body(self) -> bytes:
        return struct.pack("!I", self.code)

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        if len(body) != 4:
            raise ParseError("Error length mismatch")
        return cls(struct.unpack("!I", body)[0])


@dataclass(frozen=True, slots=True)
class ErrorACK(Message):
    TYPE: ClassVar[bytes] = b"ErrorACK"


@dataclass(frozen=True, slots=True)
class GoClear(Message):
    """Section 5.11: a request to fall back to RTP, authenticated by ``clear_mac``."""

    TYPE: ClassVar[bytes] = b"GoClear "
    clear_mac: bytes

    def body(self) -> bytes:
        return self.clear_mac

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        if len(body) != MAC_LENGTH:
            raise ParseError("GoClear length mismatch")
        return cls(body)


@dataclass(frozen=True, slots=True)
class ClearACK(Message):
    TYPE: ClassVar[bytes] = b"ClearACK"


@dataclass(frozen=True, slots=True)
class SASrelay(Message):
    """Section 5.13: a trusted MiTM relays the other leg's SAS (encrypted like Confirm)."""

    TYPE: ClassVar[bytes] = b"SASrelay"
    mac: bytes
    cfb_iv: bytes
    encrypted: bytes

    def body(self) -> bytes:
        return self.mac + self.cfb_iv + self.encrypted

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        mac, at = _take(body, 0, MAC_LENGTH)
        iv, at = _take(body, at, 16)
        if len(body) - at < 40:
            raise ParseError("SASrelay too short")
        return cls(mac, iv, body[at:])


@dataclass(frozen=True, slots=True)
class RelayACK(Message):
    TYPE: ClassVar[bytes] = b"RelayACK"


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Section 5.15: is there a ZRTP endpoint (or a PBX) out there?"""

    TYPE: ClassVar[bytes] = b"Ping    "
    endpoint_hash: bytes
    version: bytes = VERSION

    def body(self) -> bytes:
        return self.version + self.endpoint_hash

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        if len(body) != 12:
            raise ParseError("Ping length mismatch")
        return cls(body[4:], body[:4])


@dataclass(frozen=True, slots=True)
class PingACK(Message):
    TYPE: ClassVar[bytes] = b"PingACK "
    sender_endpoint_hash: bytes
    received_endpoint_hash: bytes
    ssrc: int
    version: bytes = VERSION

    def body(self) -> bytes:
        return (
            self.version
            + self.sender_endpoint_hash
            + self.received_endpoint_hash
            + struct.pack("!I", self.ssrc)
        )

    @classmethod
    def parse_body(cls, body: bytes) -> Self:
        if len(body) != 24:
            raise ParseError("PingACK length mismatch")
        return cls(body[4:12], body[12:20], struct.unpack("!I", body[20:])[0], body[:4])


MESSAGE_TYPES: dict[bytes, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloACK,
        Commit,
        DHPart1,
        DHPart2,
        Confirm1,
        Confirm2,
        Conf2ACK,
        Error,
        ErrorACK,
        GoClear,
        ClearACK,
        SASrelay,
        RelayACK,
        Ping,
        PingACK,
    )
}


def message_type(data: bytes) -> bytes | None:
    """The 8-byte type block of a message, without parsing it (for relays)."""
    if len(data) < 12 or data[:2] != b"\x50\x5a":
        return None
    return data[4:12]


def parse_message(data: bytes) -> Message:
    """One message (as carried in a :class:`~.packet.ZrtpPacket`)."""
    if len(data) < 12 or len(data) % 4:
        raise ParseError("message length")
    preamble, words = struct.unpack_from("!HH", data)
    if preamble != PREAMBLE:
        raise ParseError("bad preamble")
    if words * 4 != len(data):
        raise ParseError("length field mismatch")
    cls = MESSAGE_TYPES.get(data[4:12])
    if cls is None:
        raise ParseError("unknown message type")
    return cls.parse_body(data[12:])
