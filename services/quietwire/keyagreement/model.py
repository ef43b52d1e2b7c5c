"""The domain of keyagreement: offers, answers, plans and the dialog a plan belongs to.

Protobuf stops at the servicer (``servicer.py`` converts); everything behind it
works with these frozen dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quietwire.protocols.rtp.stun import IceCredentials


class Mode(enum.Enum):
    """How a call's media is protected, strongest first."""

    ZRTP = "zrtp"  # RFC 6189, end to end
    DTLS_SRTP = "dtls_srtp"  # RFC 5763, end to end
    SDES_SRTP = "sdes_srtp"  # RFC 4568: the keys cross the signaling servers
    PLAIN_RTP = "plain_rtp"

    @property
    def end_to_end(self) -> bool:
        return self in (Mode.ZRTP, Mode.DTLS_SRTP)


class Side(enum.Enum):
    """The two parties of a call, as its initial INVITE named them."""

    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> Side:
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


@dataclass(frozen=True, slots=True)
class Media:
    """One m= line of an offer or answer, as signaling parsed it."""

    port: int
    protocol: str = "RTP/AVP"
    connection_address: str = ""
    rtcp_port: int = 0
    rtcp_mux: bool = False
    zrtp_hash: str = ""
    sdes: bool = False  # a=crypto present (RFC 4568)
    dtls: bool = False  # a=fingerprint present (RFC 5763)
    #: a=ice-ufrag and a=ice-pwd (RFC 8839), when the phone uses ICE.
    ice: IceCredentials | None = None


@dataclass(frozen=True, slots=True)
class Tags:
    """The From and To tags of a SIP message, as it carries them."""

    from_tag: str = ""
    to_tag: str = ""


@dataclass(frozen=True, slots=True)
class Dialog:
    """The SIP dialog a plan is bound to (RFC 3261 section 12): its Call-ID is the
    key of the record; its users and tags are fixed by the initial INVITE, the
    callee's tag by the first answer from the callee. An answer in a provisional
    response (early media, RFC 3960) fixes it only for an *early* dialog: when the
    INVITE forked, another callee's answer may take the callee side over, until a
    2xx confirms one (RFC 3261 section 13.2.2.4: only one dialog survives)."""

    caller: str
    callee: str
    caller_tag: str
    callee_tag: str = ""
    #: The callee's tag came from a provisional answer (no 2xx yet).
    early: bool = False

    @property
    def bound(self) -> bool:
        """False for a dialog whose INVITE came without tags (a signaling replica of an
        older release sends none): requests for it cannot be checked, and are trusted."""
        return bool(self.caller_tag)

    def sender(self, tags: Tags) -> Side | None:
        """The side that sent a request with these tags (its From tag is the sender's
        own, RFC 3261 section 12.2.1.1); None when they are not this dialog's. The
        initial INVITE has no To tag; before the answer the callee's tag is unknown."""
        if tags.from_tag == self.caller_tag:
            if not self.callee_tag or tags.to_tag in ("", self.callee_tag):
                return Side.CALLER
            return None
        if self.callee_tag and (tags.from_tag, tags.to_tag) == (self.callee_tag, self.caller_tag):
            return Side.CALLEE
        return None

    def responder(self, tags: Tags) -> Side | None:
        """The side that sent a response with these tags: the one its request went to."""
        sender = self.sender(tags)
        if sender is None or not tags.to_tag:
            return None
        return sender.other

    def answered(self, tags: Tags, provisional: bool = False) -> Dialog:
        """This dialog once an answer from the callee in a response with these tags
        came: a 2xx fixes the callee's tag, an 18x fixes it for an early dialog. An
        early dialog's tag gives way to another fork's answer (the 2xx that wins
        forking, or a later 18x: its early media is the one relayed)."""
        if tags.from_tag != self.caller_tag or not tags.to_tag:
            return self
        if self.callee_tag and not self.early:
            return self
        return Dialog(self.caller, self.callee, self.caller_tag, tags.to_tag, provisional)


@dataclass(frozen=True, slots=True)
class Offer:
    """An SDP offer: an initial INVITE's, or a re-offer in a re-INVITE or UPDATE."""

    call_id: str
    media: tuple[Media, ...]
    tags: Tags
    reoffer: bool = False
    from_callee: bool = False
    caller: str = ""
    callee: str = ""
    #: The signaling replica holding the INVITE's transaction.
    replica: str = ""

    @property
    def side(self) -> Side:
        return Side.CALLEE if self.from_callee else Side.CALLER


@dataclass(frozen=True, slots=True)
class Answer:
    call_id: str
    media: tuple[Media, ...]
    tags: Tags
    from_caller: bool = False
    #: In an 18x (early media): the dialog it sets up is early (:class:`Dialog`).
    provisional: bool = False

    @property
    def side(self) -> Side:
        return Side.CALLER if self.from_caller else Side.CALLEE


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A relay leg's address: where one side sends its RTP and RTCP."""

    host: str
    rtp_port: int
    rtcp_port: int


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """One m= line's relay session: the leg facing each side."""

    toward_caller: Endpoint
    toward_callee: Endpoint


@dataclass(frozen=True, slots=True)
class Relay:
    relay_id: str
    grpc: str


@dataclass(frozen=True, slots=True)
class Plan:
    """An accepted offer: its mode and, per m= line in order, a relay session
    (None for a disabled stream, port 0)."""

    mode: Mode
    end_to_end: bool
    relay: Relay
    streams: tuple[StreamPlan | None, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused offer or answer: the SIP status signaling answers with, and why."""

    status: int
    warning: str
    mode: Mode | None = None


class PlanningError(Exception):
    """A relay did not do what a plan needs (the servicer answers UNAVAILABLE)."""
