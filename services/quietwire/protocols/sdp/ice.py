"""ICE in SDP (RFC 8839) as far as a relay that is not an ICE agent needs it.

quietwire's relay forwards the phones' connectivity checks (RFC 8445 section
7.2.2) unchanged and takes one with valid MESSAGE-INTEGRITY as proof of where
a phone is. For that, two things must hold in the SDP each phone receives:

- the other phone's ``a=ice-ufrag`` and ``a=ice-pwd`` pass through unchanged,
  so the phones' checks are keyed end to end (:func:`credentials` reads them
  for the relay);
- its candidates name the relay leg facing the receiver, nothing else
  (:func:`point_candidates_at`): with the sender's own candidates the receiver
  would check (and send media) around the relay, and would learn the sender's
  addresses; with none matching ``c=``/``m=`` an ICE agent declares a mismatch
  and drops ICE (RFC 8839 section 4.2.4, ``a=ice-mismatch``).
"""

from __future__ import annotations

import re

from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.protocols.sdp.session import MediaDescription, SessionDescription

#: RFC 8839 section 5.4: ``ice-ufrag = 4*256ice-char``, ``ice-pwd = 22*256ice-char``,
#: ``ice-char = ALPHA / DIGIT / "+" / "/"``.
_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
#: RFC 8445 section 5.1.2.1: type preference 126 (host), local preference 65535.
HOST_TYPE_PREFERENCE, LOCAL_PREFERENCE = 126, 65535
#: RFC 8445 section 4: component 1 is RTP, 2 is RTCP.
RTP_COMPONENT, RTCP_COMPONENT = 1, 2
FOUNDATION = "qwrelay"


def credentials(sdp: SessionDescription, media: MediaDescription) -> IceCredentials | None:
    """The stream's ICE credentials: media-level ``a=ice-ufrag``/``a=ice-pwd``, else
    session-level (RFC 8839 section 5.4). None when the phone does not use ICE or
    they break the grammar: such checks then prove nothing (the phone latches by
    its SDP address or its ZRTP Hello instead)."""
    ufrag = _one(media, sdp, "ice-ufrag")
    pwd = _one(media, sdp, "ice-pwd")
    if ufrag is None or pwd is None or not (_UFRAG.fullmatch(ufrag) and _PWD.fullmatch(pwd)):
        return None
    return IceCredentials(ufrag, pwd)


def _one(media: MediaDescription, sdp: SessionDescription, name: str) -> str | None:
    values = media.attributes(name) or sdp.attributes(name)
    return values[0] if values else None


def priority(component: int) -> int:
    """A host candidate's priority (RFC 8445 section 5.1.2.1)."""
    return (HOST_TYPE_PREFERENCE << 24) + (LOCAL_PREFERENCE << 8) + (256 - component)


def host_candidate(component: int, host: str, port: int) -> str:
    """``candidate:...`` (RFC 8839 section 5.1) for a host candidate over UDP."""
    return f"candidate:{FOUNDATION} {component} UDP {priority(component)} {host} {port} typ host"


def point_candidates_at(media: MediaDescription, host: str, rtp: int, rtcp: int | None) -> None:
    """Replace an ICE stream's candidates by the relay leg's (one per component;
    ``rtcp`` None with rtcp-mux). ``a=remote-candidates`` goes too: it names what
    the sender believes the receiver's candidates are, which are the relay's
    (RFC 8839 section 5.2). A stream without candidates is left alone."""
    if not media.has_attribute("candidate"):
        return
    media.remove_attribute("candidate")
    media.remove_attribute("remote-candidates")
    media.lines.append(("a", host_candidate(RTP_COMPONENT, host, rtp)))
    if rtcp is not None:
        media.lines.append(("a", host_candidate(RTCP_COMPONENT, host, rtcp)))
