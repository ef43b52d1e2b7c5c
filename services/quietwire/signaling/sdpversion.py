"""The ``o=`` version each phone sees keeps climbing, whoever made the SDP.

RFC 3264 section 8: a new offer or answer in a session keeps the ``o=`` line but
for its version, one higher when anything else changed; an unchanged version
promises the very same SDP. When the platform moves a call it sends each phone
the other's SDP re-pointed with the version raised (:func:`next_version`); the
other phone does not know, and its next SDP would come with a version the
receiver has already seen for different content. So every SDP forwarded in a
dialog goes :func:`continued` from the last one that phone was sent. Pure.
"""

from __future__ import annotations

from quietwire.protocols.sdp.session import ParseError, SessionDescription


def next_version(origin: str) -> str:
    """``<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``
    (RFC 4566 section 5.2) with sess-version one higher."""
    return _with_version(origin, _version(origin) + 1)


def continued(sdp: bytes, last: bytes) -> bytes:
    """``sdp`` as the phone that was last sent ``last`` must see it: in the same
    session (the ``o=`` line but for its version alike), a version above
    ``last``'s when the SDP differs and ``last``'s own when it does not; as it is
    otherwise (another session, nothing sent before, an SDP that does not parse)."""
    try:
        new, old = SessionDescription.parse(sdp), SessionDescription.parse(last)
        new_origin, old_origin = _origin(new), _origin(old)
        ours, theirs = _version(new_origin), _version(old_origin)
    except ParseError:
        return sdp
    if _with_version(new_origin, 0) != _with_version(old_origin, 0):
        return sdp
    if _without_origin(new) == _without_origin(old):
        version = theirs
    elif ours <= theirs:
        version = theirs + 1
    else:
        return sdp
    if version == ours:
        return sdp
    new.lines = [(k, _with_version(v, version)) if k == "o" else (k, v) for k, v in new.lines]
    return new.serialize()


def _origin(sdp: SessionDescription) -> str:
    origin = dict(sdp.lines).get("o")
    if origin is None:
        raise ParseError("no o= line")
    return origin


def _version(origin: str) -> int:
    fields = origin.split(" ")
    if len(fields) != 6 or not fields[2].isdigit():
        raise ParseError("bad o= line")
    return int(fields[2])


def _with_version(origin: str, version: int) -> str:
    fields = origin.split(" ")
    fields[2] = str(version)
    return " ".join(fields)


def _without_origin(sdp: SessionDescription) -> bytes:
    lines = [(k, v) for k, v in sdp.lines if k != "o"]
    return SessionDescription(lines=lines, media=sdp.media).serialize()
