"""What a ZRTP endpoint configures and gets back: config, keys, events (clock: protocols/clock)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quietwire.protocols.rtp.srtp import SrtpKeying, SrtpProfile
from quietwire.protocols.zrtp.algorithms import AuthTagType, CipherType, Offer, SasType, Suite
from quietwire.protocols.zrtp.errors import ErrorCode

CLIENT_ID = b"quietwire"
DEFAULT_OFFER = Offer(
    hashes=(b"S256", b"S384"),
    ciphers=(b"AES1",),
    auth_tags=(b"HS80", b"HS32"),
    key_agreements=(b"DH3k", b"X255", b"EC25", b"DH2k", b"EC38", b"Mult"),
    sas_types=(b"B32 ", b"B256"),
)


class Role(enum.Enum):
    INITIATOR = b"Initiator"
    RESPONDER = b"Responder"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    zid: bytes
    offer: Offer = DEFAULT_OFFER
    client_id: bytes = CLIENT_ID
    #: Send a Commit once discovery completes (both sides usually do: 4.2).
    initiate: bool = True
    #: A peer Hello that does not match its SDP a=zrtp-hash ends the call's security.
    binding_mismatch_fatal: bool = True
    #: Seconds the peer should keep our new retained secret.
    cache_expiration: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, repr=False)
class SrtpKeys:
    """SRTP master keys and salts, ours to send with and the peer's to receive with."""

    cipher: CipherType
    auth_tag: AuthTagType
    send_key: bytes
    send_salt: bytes
    receive_key: bytes
    receive_salt: bytes

    def __repr__(self) -> str:
        return f"SrtpKeys({self.cipher.name}/{self.auth_tag.name}, <hidden>)"

    def keying(self) -> SrtpKeying:
        """These keys for an SRTP context: AES1 with HS80/HS32 is AES-CM-128-HMAC-SHA1-80/32."""
        profile = (
            SrtpProfile.AES128_CM_SHA1_80
            if self.auth_tag is AuthTagType.HS80
            else SrtpProfile.AES128_CM_SHA1_32
        )
        return SrtpKeying(
            profile, self.send_key, self.send_salt, self.receive_key, self.receive_salt
        )


@dataclass(frozen=True, slots=True, repr=False)
class MultistreamSession:
    """What a secured DH stream hands to further streams of the same call (4.4.3)."""

    zrtp_session: bytes
    suite: Suite
    sas: str
    sas_verified: bool

    def __repr__(self) -> str:
        return f"MultistreamSession({self.suite}, <hidden>)"


@dataclass(frozen=True, slots=True)
class Secured:
    sas: str
    sas_type: SasType
    suite: Suite
    #: The SAS was verified on an earlier call and the retained secret matched.
    sas_verified: bool
    #: We had a retained secret for this peer and it did not match: a MiTM, or a
    #: reinstalled phone. The user must compare the SAS again.
    cache_mismatch: bool
    multistream: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    code: ErrorCode
    reason: str
    #: True when the peer sent the Error; False when we gave up.
    by_peer: bool


Event = Secured | Failed
