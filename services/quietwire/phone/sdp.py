"""The phone's SDP: an offer or answer with its codecs and a=zrtp-hash, and what
it learns from the peer's (where to send, which codec, the peer's zrtp-hash)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from quietwire.phone.audio import CODECS, Codec
from quietwire.protocols.sdp.session import Connection, MediaDescription, SessionDescription

TELEPHONE_EVENT = 101


def describe(
    address: str,
    port: int,
    zrtp_hash: str,
    codecs: tuple[Codec, ...] = CODECS,
    origin: tuple[int, int] | None = None,
) -> bytes:
    """Our SDP: RTP/AVP (ZRTP needs no SAVP, as Linphone does), RTCP on port + 1;
    ``origin`` the o= session id and version (a new session when None)."""
    if origin is None:
        session = secrets.randbelow(2**31)
        origin = (session, session)
    sdp = SessionDescription(
        lines=[
            ("v", "0"),
            ("o", f"quietwire {origin[0]} {origin[1]} IN IP4 {address}"),
            ("s", "quietwire"),
            ("c", f"IN IP4 {address}"),
            ("t", "0 0"),
        ]
    )
    media = MediaDescription(
        "audio", port, "RTP/AVP", [str(c.payload_type) for c in codecs] + [str(TELEPHONE_EVENT)]
    )
    for codec in codecs:
        media.lines.append(("a", f"rtpmap:{codec.payload_type} {codec.rtpmap}"))
    media.lines.append(("a", f"rtpmap:{TELEPHONE_EVENT} telephone-event/8000"))
    media.lines.append(("a", f"rtcp:{port + 1}"))
    media.lines.append(("a", f"zrtp-hash:{zrtp_hash}"))
    sdp.media.append(media)
    return sdp.serialize()


@dataclass(slots=True)
class LocalDescription:
    """The SDP this phone sends in one call: one o= session whose version goes
    up by one whenever what it says changes, and only then (RFC 3264 section 8)."""

    address: str
    port: int
    zrtp_hash: str
    session: int = field(default_factory=lambda: secrets.randbelow(2**31))
    version: int = 0
    last: bytes = b""

    def describe(self, codecs: tuple[Codec, ...] = CODECS) -> bytes:
        sdp = describe(self.address, self.port, self.zrtp_hash, codecs, self._origin())
        if self.last and sdp != self.last:
            self.version += 1
            sdp = describe(self.address, self.port, self.zrtp_hash, codecs, self._origin())
        self.last = sdp
        return sdp

    def _origin(self) -> tuple[int, int]:
        return self.session, self.session + self.version


@dataclass(frozen=True, slots=True)
class Remote:
    """What the peer's SDP tells us about its audio."""

    address: str
    port: int
    rtcp_port: int
    codec: Codec
    zrtp_hash: str | None


class NoCommonCodec(ValueError):
    pass


def remote_of(data: bytes, supported: tuple[Codec, ...] = CODECS) -> Remote:
    """The first audio stream of the peer's SDP and the codec of the call.

    The codec is the first of the peer's list that we support: an offer lists
    the offerer's preference and the answer keeps it (RFC 3264 section 6.1); an
    answer lists the answerer's, which the offerer then sends (section 7).
    """
    sdp = SessionDescription.parse(data)
    audio = next((m for m in sdp.media if m.media == "audio" and m.port), None)
    if audio is None:
        raise NoCommonCodec("no audio stream")
    connection = sdp.media_connection(audio) or Connection("0.0.0.0")  # noqa: S104
    codec = next(
        (
            Codec(ours.name, pt, ours.clock_rate, ours.channels)
            for pt, name in _payload_types(audio)
            for ours in supported
            if name.lower() == ours.name.lower()
        ),
        None,
    )
    if codec is None:
        raise NoCommonCodec("no codec in common")
    return Remote(
        connection.address, audio.port, audio.rtcp_port or audio.port + 1, codec, audio.zrtp_hash
    )


#: Static payload types (RFC 3551 section 6) a peer may use without an rtpmap.
STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}


def _payload_types(audio: MediaDescription) -> list[tuple[int, str]]:
    """(payload type, encoding name) in the order of the m= line."""
    names = {str(pt): name for pt, name in STATIC_PAYLOAD_TYPES.items()}
    for value in audio.attributes("rtpmap"):
        pt, _, encoding = (value or "").partition(" ")
        names[pt] = encoding.split("/")[0]
    return [(int(fmt), names[fmt]) for fmt in audio.formats if fmt.isdigit() and fmt in names]
