"""What a datagram on a media port is, from its first bytes (RFC 7983, RFC 5761).

    first byte   0..3    STUN          (RFC 5389)
                16..19   ZRTP          (RFC 6189; checked by the magic cookie)
                20..63   DTLS          (RFC 6347)
                64..79   TURN channel  (RFC 5766)
               128..191  RTP or RTCP   (RTCP when the packet type is 192..223, RFC 5761 section 4)

No keys are needed: the relay classifies SRTP/SRTCP the same way.
"""

from __future__ import annotations

import enum

_ZRTP_COOKIE = b"ZRTP"
_RTCP_TYPES = range(192, 224)


class PacketKind(enum.Enum):
    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN = "turn"
    RTP = "rtp"
    RTCP = "rtcp"
    UNKNOWN = "unknown"


def classify(data: bytes) -> PacketKind:
    if not data:
        return PacketKind.UNKNOWN
    first = data[0]
    if first <= 3:
        return PacketKind.STUN if len(data) >= 20 else PacketKind.UNKNOWN
    if 16 <= first <= 19:
        return PacketKind.ZRTP if data[4:8] == _ZRTP_COOKIE else PacketKind.UNKNOWN
    if 20 <= first <= 63:
        return PacketKind.DTLS
    if 64 <= first <= 79:
        return PacketKind.TURN
    if 128 <= first <= 191 and len(data) >= 8:
        return PacketKind.RTCP if data[1] in _RTCP_TYPES else PacketKind.RTP
    return PacketKind.UNKNOWN
