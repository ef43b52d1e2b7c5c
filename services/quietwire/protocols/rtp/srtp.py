"""SRTP and SRTCP (RFC 3711) through pylibsrtp, keyed by a key agreement such as ZRTP.

One :class:`SrtpContext` per call leg: an outbound session keyed with our
master key and salt, an inbound one with the peer's. A packet that fails
authentication or replay checks raises :class:`SrtpError`; callers count and
drop it, never play it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import pylibsrtp


class SrtpProfile(enum.Enum):
    """AES-CM-128 with HMAC-SHA1 tags: what ZRTP's AES1 with HS80 / HS32 means."""

    AES128_CM_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES128_CM_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def libsrtp(self) -> int:
        if self is SrtpProfile.AES128_CM_SHA1_80:
            return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32)


class SrtpError(ValueError):
    """A packet that did not authenticate, was replayed, or could not be protected."""


@dataclass(frozen=True, slots=True, repr=False)
class SrtpKeying:
    profile: SrtpProfile
    send_key: bytes
    send_salt: bytes
    receive_key: bytes
    receive_salt: bytes

    def __repr__(self) -> str:
        return f"SrtpKeying({self.profile.value}, <hidden>)"


@dataclass(slots=True)
class SrtpContext:
    keying: SrtpKeying
    _outbound: pylibsrtp.Session = field(init=False, repr=False)
    _inbound: pylibsrtp.Session = field(init=False, repr=False)

    def __post_init__(self) -> None:
        k = self.keying
        out_policy = pylibsrtp.Policy(
            key=k.send_key + k.send_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=k.profile.libsrtp,
        )
        in_policy = pylibsrtp.Policy(
            key=k.receive_key + k.receive_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=k.profile.libsrtp,
        )
        self._outbound = pylibsrtp.Session(policy=out_policy)
        self._inbound = pylibsrtp.Session(policy=in_policy)

    def protect(self, rtp: bytes) -> bytes:
        return _guarded(self._outbound.protect, rtp)

    def unprotect(self, srtp: bytes) -> bytes:
        return _guarded(self._inbound.unprotect, srtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return _guarded(self._outbound.protect_rtcp, rtcp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        return _guarded(self._inbound.unprotect_rtcp, srtcp)


def _guarded(operation: Callable[[bytes], bytes], data: bytes) -> bytes:
    try:
        return bytes(operation(data))
    except pylibsrtp.Error as exc:
        raise SrtpError(str(exc)) from None
