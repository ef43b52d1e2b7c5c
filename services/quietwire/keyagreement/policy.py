"""Media security policy: what an offer's media descriptions mean, and what we accept.

ZRTP (``a=zrtp-hash``, even with RTP/AVP as Linphone sends it) and DTLS-SRTP
(``a=fingerprint``) are end to end; SDES-SRTP (``a=crypto``) puts the keys in
the signaling, so it is hop by hop; anything else is plain RTP. The default
policy ``secure_only`` refuses plain RTP (488 with a Warning that says why).
Users may have their own policy; a call follows the stricter of its two users.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from quietwire.keyagreement.model import Media, Mode


class Policy(enum.Enum):
    SECURE_ONLY = "secure_only"  # ZRTP, DTLS-SRTP or SDES-SRTP; never plain RTP
    END_TO_END_ONLY = "e2e_only"  # ZRTP or DTLS-SRTP
    ALLOW_PLAIN = "allow_plain"  # everything (for testing a network, never for users)


@dataclass(frozen=True, slots=True)
class Verdict:
    mode: Mode
    end_to_end: bool
    accepted: bool
    warning: str = ""


#: Strongest first: a call is as weak as its weakest stream.
STRENGTH = (Mode.ZRTP, Mode.DTLS_SRTP, Mode.SDES_SRTP, Mode.PLAIN_RTP)


def _stream_mode(m: Media) -> Mode:
    if m.zrtp_hash:
        return Mode.ZRTP
    if m.dtls and "SAVP" in m.protocol:
        return Mode.DTLS_SRTP
    if m.sdes and "SAVP" in m.protocol:
        return Mode.SDES_SRTP
    return Mode.PLAIN_RTP


def mode_of(media: Sequence[Media]) -> Mode:
    """The weakest protection among the active streams (port not 0) of an offer or answer."""
    modes = [_stream_mode(m) for m in media if m.port]
    return max(modes, key=STRENGTH.index) if modes else Mode.PLAIN_RTP


def judge(media: Sequence[Media], policy: Policy) -> Verdict:
    mode = mode_of(media)
    if mode is Mode.PLAIN_RTP and policy is not Policy.ALLOW_PLAIN:
        return Verdict(
            mode,
            False,
            False,
            "quietwire: plain RTP refused; enable ZRTP (or SRTP) media encryption",
        )
    if not mode.end_to_end and policy is Policy.END_TO_END_ONLY:
        return Verdict(
            mode, False, False, "quietwire: SDES keys would be visible to the server; use ZRTP"
        )
    return Verdict(mode, mode.end_to_end, True)


def downgrade(before: Mode, after: Mode) -> bool:
    """True when ``after`` protects less than ``before`` (a re-INVITE or answer)."""
    return STRENGTH.index(after) > STRENGTH.index(before)


#: Least strict first.
STRICTNESS = (Policy.ALLOW_PLAIN, Policy.SECURE_ONLY, Policy.END_TO_END_ONLY)


def strictest(*policies: Policy) -> Policy:
    return max(policies, key=STRICTNESS.index)


def policy_or(value: str | None, default: Policy) -> Policy:
    """The policy a stored value names; ``default`` when there is none (or it is unknown)."""
    return next((p for p in Policy if p.value == value), default)
