"""MoveCall: point both phones of an established call at a new relay (issue 15).

The platform re-INVITEs each phone as the other party, as ``TerminateCall``
BYEs them (any replica can: the dialog is in Redis). Each offer is the last SDP
that phone was sent, with only the relay's address and ports changed and the
``o=`` version raised by one (RFC 3264 section 8): same codecs, same
``a=zrtp-hash``, so the phones keep their ZRTP/SRTP session and only send
elsewhere. Both phones at once; each 2xx is ACKed and its answer parsed (where
the phone now receives) for keyagreement to tell the new relay.

A 491 (glare, RFC 3261 section 14.1: the phone has its own re-INVITE in
flight) is retried after a random wait, a few times; so is a 500 with
Retry-After (section 14.2: the phone is still answering the other's re-INVITE),
after the time it asks for, two seconds at most. A phone that refuses or
does not answer leaves the move failed; when the other accepted, ``detail``
says so (keyagreement then ends the call).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quietwire.protocols.sdp.session import ParseError as SdpParseError
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.message import Response
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.signaling.dialogs import Dialog, DialogStore, Party, ViaFor, other
from quietwire.signaling.media import describe, rewrite
from quietwire.signaling.sdpversion import next_version
from quietwire.signaling.targets import Target
from quietwire.signaling.uac import PlatformRequests

log = logging.getLogger(__name__)

#: Seconds a phone has to give its final answer to the move.
ANSWER_TIMEOUT = 8.0
#: 491 answers retried, at most, per phone.
GLARE_RETRIES = 3


#: Seconds at most a phone's Retry-After makes a move wait before trying again.
MAX_RETRY_AFTER = 2.0


def glare_wait() -> float:
    """RFC 3261 section 14.1: a UAC that does not own the Call-ID waits 0 to 2 s
    (in 10 ms units) before retrying after a 491."""
    return secrets.randbelow(201) / 100


def retry_wait(response: Response, glare: Callable[[], float] = glare_wait) -> float | None:
    """How long to wait before re-INVITEing again after ``response``; None: do
    not (RFC 3261 section 14.1 for a 491, 14.2 for a 500 with Retry-After)."""
    if response.status == 491:
        return glare()
    after = response.headers.get("Retry-After") if response.status == 500 else None
    if after is None:
        return None
    seconds = after.split(";")[0].split("(")[0].strip()
    return min(float(seconds), MAX_RETRY_AFTER) if seconds.isdigit() else None


class MoveOutcome(enum.Enum):
    MOVED = "moved"
    NO_SUCH_CALL = "no such call"
    REFUSED = "refused"
    NO_ANSWER = "no answer"


@dataclass(frozen=True, slots=True)
class PhoneAnswer:
    """How one phone took its re-INVITE."""

    party: Party
    #: The final status; 0 when none came (flow gone, timed out).
    status: int = 0
    reason: str = ""
    #: Its answer, parsed (a 2xx's).
    media: list[pb.MediaDescription] = field(default_factory=list)
    #: The dialog was gone when a CSeq number was taken (the call ended meanwhile).
    call_gone: bool = False

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    def said(self) -> str:
        if self.accepted:
            return f"the {self.party.value} accepted"
        if self.status:
            return f"the {self.party.value} refused: {self.status} {self.reason}".rstrip()
        return f"the {self.party.value} did not answer{': ' + self.reason if self.reason else ''}"


@dataclass(frozen=True, slots=True)
class MoveResult:
    outcome: MoveOutcome
    caller_media: list[pb.MediaDescription] = field(default_factory=list)
    callee_media: list[pb.MediaDescription] = field(default_factory=list)
    sip_status: int = 0
    detail: str = ""


def moved_sdp(last: bytes, media: Sequence[pb.MediaPlan], toward_caller: bool) -> bytes:
    """``last`` (the SDP a phone was last sent) pointed at the new relay's
    endpoints, its ``o=`` session version raised by one (RFC 3264 section 8):
    nothing else changes. Raises :class:`SdpParseError` if it does not parse."""
    session = SessionDescription.parse(last)
    session.lines = [(k, next_version(v)) if k == "o" else (k, v) for k, v in session.lines]
    return rewrite(session, pb.Plan(media=media), toward_caller)


def summary(answers: Sequence[PhoneAnswer]) -> MoveResult:
    """Both phones' answers as one outcome: a refusal first, then silence."""
    by_party = {a.party: a for a in answers}
    caller, callee = by_party[Party.CALLER], by_party[Party.CALLEE]
    detail = "; ".join(a.said() for a in answers)
    if any(a.call_gone for a in answers):
        return MoveResult(MoveOutcome.NO_SUCH_CALL, detail="the call ended during the move")
    refused = next((a for a in answers if a.status >= 300), None)
    if refused is not None:
        return MoveResult(MoveOutcome.REFUSED, sip_status=refused.status, detail=detail)
    if not all(a.accepted for a in answers):
        return MoveResult(MoveOutcome.NO_ANSWER, detail=detail)
    return MoveResult(MoveOutcome.MOVED, caller.media, callee.media, 200, detail)


class CallMover:
    def __init__(
        self,
        dialogs: DialogStore,
        uac: PlatformRequests,
        via: ViaFor,
        *,
        timeout: float = ANSWER_TIMEOUT,
        wait: Callable[[], float] = glare_wait,
    ) -> None:
        self.dialogs, self.uac, self.via = dialogs, uac, via
        self.timeout, self.wait = timeout, wait

    async def move(
        self, call_id: str, media: Sequence[pb.MediaPlan], relay_id: str = ""
    ) -> MoveResult:
        """Both phones of ``call_id`` pointed at ``media`` (on relay ``relay_id``)."""
        dialog = await self.dialogs.get(call_id)
        if dialog is None:
            return MoveResult(MoveOutcome.NO_SUCH_CALL, detail="no established call")
        offers: dict[Party, bytes] = {}
        for party in Party:
            try:
                offers[party] = moved_sdp(dialog.leg(party).sdp, media, party is Party.CALLER)
            except SdpParseError:
                detail = f"no usable SDP recorded for the {party.value}"
                return MoveResult(MoveOutcome.REFUSED, detail=detail)
        answers = await asyncio.gather(
            *(self._reinvite(dialog, party, offers[party]) for party in Party)
        )
        result = summary(answers)
        log.info(
            "call moved" if result.outcome is MoveOutcome.MOVED else "call not moved",
            extra={
                "call_id": call_id,
                "relay_id": relay_id,
                "outcome": result.outcome.value,
                "detail": result.detail,
            },
        )
        return result

    async def _reinvite(self, dialog: Dialog, to: Party, offer: bytes) -> PhoneAnswer:
        """Re-INVITE party ``to`` with ``offer`` as the other party until it gives
        an answer other than "try again" (or the retries are spent)."""
        target = Target.of_flow(dialog.side(to).flow_id)
        for attempt in range(GLARE_RETRIES + 1):
            number = await self.dialogs.platform_number(dialog.call_id, other(to))
            if number is None:
                return PhoneAnswer(to, call_gone=True)
            invite = dialog.request("INVITE", to, number, self.via)
            if invite is None:
                return PhoneAnswer(to, reason="its Contact does not parse")
            invite.headers.add("Content-Type", "application/sdp")
            invite.body = offer
            response = await self.uac.send(target, invite, self.timeout)
            if response is None:
                return PhoneAnswer(to)
            wait = retry_wait(response, self.wait)
            if wait is not None and attempt < GLARE_RETRIES:
                await asyncio.sleep(wait)
                continue
            if not 200 <= response.status < 300:
                return PhoneAnswer(to, response.status, response.reason)
            await self.uac.ack(target, invite, response)
            await self.dialogs.forwarded_sdp(dialog.call_id, to, offer)
            return _answered(to, response.body, response.reason)
        raise AssertionError("unreachable: the last attempt returns")


def _answered(to: Party, body: bytes, reason: str) -> PhoneAnswer:
    """A 2xx: its answer parsed (one that does not parse is a refusal: the phone
    took the move but we cannot tell the relay where it receives)."""
    try:
        return PhoneAnswer(to, 200, reason, describe(SessionDescription.parse(body)))
    except SdpParseError:
        return PhoneAnswer(to, 488, "its answer's SDP does not parse")
