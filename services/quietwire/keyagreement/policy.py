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
from typing import TypeAlias

from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb

Mode: TypeAlias = pb.SecurityMode.ValueType


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


def mode_of(media: Sequence[pb.MediaDescription]) -> Mode:
    """The weakest protection among the audio/video streams of an offer or answer."""
    modes = []
    for m in media:
        if not m.port:
            continue
        if m.zrtp_hash:
            modes.append(pb.SECURITY_MODE_ZRTP)
        elif m.fingerprints and "SAVP" in m.protocol:
            modes.append(pb.SECURITY_MODE_DTLS_SRTP)
        elif m.crypto and "SAVP" in m.protocol:
            modes.append(pb.SECURITY_MODE_SDES_SRTP)
        else:
            modes.append(pb.SECURITY_MODE_PLAIN_RTP)
    strength = [
        pb.SECURITY_MODE_ZRTP,
        pb.SECURITY_MODE_DTLS_SRTP,
        pb.SECURITY_MODE_SDES_SRTP,
        pb.SECURITY_MODE_PLAIN_RTP,
    ]
    return max(modes, key=strength.index) if modes else pb.SECURITY_MODE_PLAIN_RTP


def judge(media: Sequence[pb.MediaDescription], policy: Policy) -> Verdict:
    mode = mode_of(media)
    end_to_end = mode in (pb.SECURITY_MODE_ZRTP, pb.SECURITY_MODE_DTLS_SRTP)
    if mode == pb.SECURITY_MODE_PLAIN_RTP and policy is not Policy.ALLOW_PLAIN:
        return Verdict(
            mode,
            False,
            False,
            "quietwire: plain RTP refused; enable ZRTP (or SRTP) media encryption",
        )
    if not end_to_end and policy is Policy.END_TO_END_ONLY:
        return Verdict(
            mode, False, False, "quietwire: SDES keys would be visible to the server; use ZRTP"
        )
    return Verdict(mode, end_to_end, True)


def downgrade(before: Mode, after: Mode) -> bool:
    """True when ``after`` protects less than ``before`` (a re-INVITE or answer)."""
    order = [
        pb.SECURITY_MODE_ZRTP,
        pb.SECURITY_MODE_DTLS_SRTP,
        pb.SECURITY_MODE_SDES_SRTP,
        pb.SECURITY_MODE_PLAIN_RTP,
    ]
    return order.index(after) > order.index(before)


#: Least strict first.
STRICTNESS = (Policy.ALLOW_PLAIN, Policy.SECURE_ONLY, Policy.END_TO_END_ONLY)


def strictest(*policies: Policy) -> Policy:
    return max(policies, key=STRICTNESS.index)


def policy_or(value: str | None, default: Policy) -> Policy:
    """The policy a stored value names; ``default`` when there is none (or it is unknown)."""
    return next((p for p in Policy if p.value == value), default)
