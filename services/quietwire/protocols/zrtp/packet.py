"""The ZRTP packet envelope (RFC 6189 section 5, Figure 2).

    byte 0 = 0x10, byte 1 = 0x00, 16-bit sequence number,
    magic cookie "ZRTP" (0x5a525450), SSRC, the message, CRC-32C.

The CRC is CRC-32C (Castagnoli) over everything before it; it goes on the
wire least-significant byte first (what bzrtp, GNU ZRTP and Linphone do).
Fragmented packets (first byte 0x11, an extension some stacks use for
messages above the MTU) are rejected cleanly: no standard message needs them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import google_crc32c

from quietwire.protocols.zrtp.errors import ParseError

MAGIC_COOKIE = 0x5A525450
FIRST_BYTE = 0x10
FRAGMENTED_FIRST_BYTE = 0x11
HEADER = struct.Struct("!BBHII")
HEADER_LENGTH = HEADER.size
CRC_LENGTH = 4
#: Header, the shortest message (3 words: preamble, length, type) and the CRC.
MIN_PACKET_LENGTH = HEADER_LENGTH + 12 + CRC_LENGTH


def crc(data: bytes) -> bytes:
    """The CRC field for ``data`` as it goes on the wire."""
    return int(google_crc32c.value(data)).to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class ZrtpPacket:
    sequence: int
    ssrc: int
    #: The message: preamble, length, type block, body.
    message: bytes

    @classmethod
    def parse(cls, data: bytes) -> ZrtpPacket:
        if len(data) < MIN_PACKET_LENGTH:
            raise ParseError("packet too short")
        first, second, sequence, cookie, ssrc = HEADER.unpack_from(data)
        if first == FRAGMENTED_FIRST_BYTE:
            raise ParseError("fragmented ZRTP message not supported")
        if first != FIRST_BYTE or second != 0 or cookie != MAGIC_COOKIE:
            raise ParseError("not a ZRTP packet")
        if crc(data[:-CRC_LENGTH]) != data[-CRC_LENGTH:]:
            raise ParseError("bad CRC")
        return cls(sequence, ssrc, data[HEADER_LENGTH:-CRC_LENGTH])

    def serialize(self) -> bytes:
        head = HEADER.pack(FIRST_BYTE, 0, self.sequence & 0xFFFF, MAGIC_COOKIE, self.ssrc)
        body = head + self.message
        return body + crc(body)
