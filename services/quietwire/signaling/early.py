"""SDP outside an INVITE's 2xx: early media (RFC 3959, 3960), PRACK (RFC 3262), UPDATE (RFC 3311).

A call's offers and answers may ride in six places (RFC 6337 section 2.1):
INVITE/2xx, INVITE/reliable 18x, 2xx/ACK, reliable 18x/PRACK, PRACK/2xx and
UPDATE/2xx. Every SDP the proxy forwards in any of them is planned by
keyagreement and rewritten toward the relay, like the 2xx's; an SDP that has
no place to be planned in is not forwarded (the 18x goes on without it).

- An 18x's SDP to an INVITE with an offer is the *early answer*. RFC 3261
  section 13.2.1 lets the answer go in provisional responses before the 2xx
  (the same exact answer); RFC 3262 makes it the answer in a reliable 18x. It
  is planned with ``provisional`` set: keyagreement checks it like a 2xx's
  (policy, ``a=zrtp-hash``), points the relay's callee leg at it and binds an
  *early* dialog, which another fork's answer may take over until a 2xx
  confirms one (RFC 3261 section 13.2.2.4: only one dialog survives). Each
  fork's To tag latches its early answer here: a repeated 18x with the same SDP
  reuses its plan. At the 2xx: the same SDP is consistent (planned again as
  final, which confirms the dialog); a different one is planned as the answer
  (RFC 6337 section 3.1: with an unreliable 18x the 2xx's is the answer the
  UAC keeps). A 2xx without SDP (its answer was in a reliable 18x) confirms
  the early dialog as it stands when its fork holds the relay (a PRACK or
  UPDATE may have moved its media since the 18x); from another fork, it takes
  the relay over with that fork's latched early answer.
- An 18x's SDP to an INVITE without one is the callee's offer (RFC 3262
  section 5), planned like an offer in a 2xx; the caller answers in its PRACK.
  One such offer per call: another fork's is refused.
- PRACK and UPDATE in an early dialog: the proxy records dialogs at the 2xx, so
  before it the request's signed Route token (bound to the Call-ID) tells which
  party sends (it names the caller's From tag); keyagreement checks both tags
  against the early dialog it bound. Their offers go the re-offer path.

A refused early answer ends its fork: the proxy CANCELs it and keeps the
refusal (status and Warning) as the fork's answer, which the caller gets unless
another fork answers. Dropping the 18x instead would leave the callee playing
early media into nothing and the caller ringing for a 2xx that must carry the
same refused answer (RFC 3261 section 13.2.1), with no word of why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quietwire.protocols.sip.message import Message, Request, Response
from quietwire.signaling.dialogs import Party
from quietwire.signaling.media import (
    MediaPlanner,
    Offer,
    OfferKind,
    Refusal,
    message_tags,
    reversed_tags,
)
from quietwire.signaling.tokens import RouteToken

if TYPE_CHECKING:
    from quietwire.signaling.contexts import Context, ServerTable

#: Early dialogs (To tags) one INVITE latches an answer for: a callee making up
#: To tags cannot grow the table past this (an 18x beyond goes on without SDP).
MAX_EARLY_DIALOGS = 8
#: Methods whose SDP in an early dialog is planned here (RFC 3262, RFC 3311).
EARLY_OFFERS = frozenset({"PRACK", "UPDATE"})
SECOND_OFFER = Refusal(488, "quietwire: one early offer per call; another fork made it first")
CHANGED_OFFER = Refusal(488, "quietwire: the 2xx changes the offer of the reliable 18x")


@dataclass(frozen=True, slots=True)
class Latched:
    """An SDP one fork's response carried, and the same as it was forwarded."""

    to_tag: str
    sdp: bytes
    planned: bytes


@dataclass(slots=True)
class EarlySdp:
    """What an INVITE's provisional responses carried, per fork (To tag)."""

    answers: dict[str, Latched] = field(default_factory=dict)
    #: The fork whose early answer the relay's callee leg follows (the latest).
    holder: str = ""
    #: The callee's offer in a reliable 18x (the INVITE had none).
    offer: Latched | None = None
    #: The caller answered that offer (in a PRACK): a later PRACK's SDP is an offer.
    offer_answered: bool = False

    def sent_to_caller(self, to_tag: str) -> bytes:
        """The SDP fork ``to_tag``'s 18x gave the caller (its early answer, or the
        callee's offer), as forwarded; empty when none did."""
        latched = self.answers.get(to_tag)
        if latched is None and self.offer is not None and self.offer.to_tag == to_tag:
            latched = self.offer
        return latched.planned if latched is not None else b""


def strip_sdp(message: Message) -> None:
    """Forward ``message`` without its SDP (it could not be planned)."""
    message.body = b""
    message.headers.remove("Content-Type")


def solicited_offer(context: Context, response: Response) -> Offer:
    """The offer in a response to an INVITE without SDP (RFC 3261 section 14.1),
    planned like one in an INVITE: a new call's, or a re-offer in its dialog."""
    request = context.request
    from_callee = bool(context.offer_in_2xx_from_callee)
    if context.initial_invite:
        parties = (request.from_.uri.aor, request.request_uri.aor)
        tags = message_tags(response)
        return Offer(
            response.call_id, OfferKind.INITIAL, response.body, tags, from_callee, *parties
        )
    tags = reversed_tags(response)
    return Offer(response.call_id, OfferKind.REOFFER, response.body, tags, from_callee)


async def provisional_sdp(
    media: MediaPlanner, context: Context, response: Response
) -> bytes | Refusal | None:
    """An 18x's SDP as it is forwarded: planned, refused, or None (go on without it)."""
    to_tag = response.to.tag
    if not to_tag or context.request.method != "INVITE":
        return None  # no dialog to plan it in
    early = context.early
    if context.offer_from_callee is not None:
        latched = early.answers.get(to_tag)
        if latched is not None and latched.sdp == response.body:
            return latched.planned
        if latched is None and len(early.answers) >= MAX_EARLY_DIALOGS:
            return None
        planned = await media.answer(
            response.call_id,
            response.body,
            from_caller=context.offer_from_callee,
            tags=message_tags(response),
            provisional=context.initial_invite,
        )
        if not isinstance(planned, Refusal):
            early.answers[to_tag] = Latched(to_tag, response.body, planned)
            early.holder = to_tag
        return planned
    if context.offer_in_2xx_from_callee is None:
        return None
    if early.offer is not None:
        same = (early.offer.to_tag, early.offer.sdp) == (to_tag, response.body)
        return early.offer.planned if same else SECOND_OFFER
    offered = await media.offer(solicited_offer(context, response))
    if not isinstance(offered, Refusal):
        early.offer = Latched(to_tag, response.body, offered)
    return offered


async def final_sdp(media: MediaPlanner, context: Context, ok: Response) -> bytes | Refusal | None:
    """A 2xx's SDP as the planner rewrites it (None: nothing to put in it): the
    answer to the request's offer (confirming or replacing an early answer), or
    the offer a request without SDP asked for, planned like one in an INVITE
    (policy, downgrade refusal, relay)."""
    early = context.early
    if early.offer is not None:  # answered in the PRACK: the 2xx may only repeat it
        if not ok.body:
            return None
        same = (early.offer.to_tag, early.offer.sdp) == (ok.to.tag, ok.body)
        return early.offer.planned if same else CHANGED_OFFER
    if context.offer_from_callee is not None:
        to_tag = ok.to.tag or ""
        latched = early.answers.get(to_tag)
        if ok.body:
            sdp = ok.body
        elif latched is None or not context.initial_invite:
            return None  # a re-INVITE's 2xx: its dialog is confirmed already
        elif to_tag == early.holder:
            sdp = b""  # confirms the early dialog whose media the relay follows
        else:
            sdp = latched.sdp  # the fork's early answer takes the relay over
        planned = await media.answer(
            ok.call_id,
            sdp,
            from_caller=context.offer_from_callee,
            tags=message_tags(ok),
            # Only an INVITE's 2xx confirms a dialog; a PRACK's or an UPDATE's
            # answers within an early one.
            provisional=context.request.method != "INVITE",
        )
        return planned if ok.body or isinstance(planned, Refusal) else None
    if context.offer_in_2xx_from_callee is None or not ok.body:
        return None
    return await media.offer(solicited_offer(context, ok))


def early_party(token: RouteToken | None, request: Request) -> Party | None:
    """Who sends an in-dialog request before its dialog is recorded (an early
    dialog's PRACK or UPDATE): the caller when its From tag is the one our signed
    Route token names, the callee when its To tag is; None without a token."""
    if token is None or not request.from_.tag or not request.to.tag:
        return None
    if request.from_.tag == token.ftag:
        return Party.CALLER
    if request.to.tag == token.ftag:
        return Party.CALLEE
    return None


def offer_to_answer(servers: ServerTable, request: Request) -> Context | None:
    """The ringing INVITE whose reliable 18x offer this PRACK answers (RFC 3262
    section 5), if it is one: same Call-ID, the offer's fork, not answered yet.
    The caller's PRACK comes on the caller's flow, so to the INVITE's replica."""
    if request.method != "PRACK" or not request.body:
        return None
    for context in servers:
        offer = context.early.offer
        if (
            context.initial_invite
            and context.request.call_id == request.call_id
            and context.request.from_.tag == request.from_.tag
            and offer is not None
            and offer.to_tag == request.to.tag
            and not context.early.offer_answered
        ):
            return context
    return None
