"""RTP packets, through aiortc's parser (the one adapter to it in quietwire)."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.rtp import RtpPacket

from quietwire.protocols.rtp.errors import ParseError


@dataclass(frozen=True, slots=True)
class Rtp:
    """An RTP packet (RFC 3550 section 5.1), without header extensions we do not use."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> Rtp:
        try:
            packet = RtpPacket.parse(data)
        except ValueError as exc:
            raise ParseError("bad RTP packet") from exc
        return cls(
            packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
            bytes(packet.payload),
            bool(packet.marker),
        )

    def serialize(self) -> bytes:
        packet = RtpPacket(
            payload_type=self.payload_type,
            marker=int(self.marker),
            sequence_number=self.sequence & 0xFFFF,
            timestamp=self.timestamp & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=self.payload,
        )
        return bytes(packet.serialize())
