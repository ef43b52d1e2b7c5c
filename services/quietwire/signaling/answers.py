"""The SDP that comes back through the proxy, and what it does when it refuses it.

An 18x's SDP (an early answer, or the callee's offer in a reliable 18x), a
2xx's, and a PRACK's answer to a reliable 18x's offer: :mod:`.early` decides
what each is planned as; :class:`Answers` puts the plan in the message, records
the dialog a 2xx sets up (or notes the SDP each side now holds), and acts on a
refusal. A refused 18x CANCELs its fork, a refused 2xx to an initial INVITE is
ACKed and BYEd (to a re-INVITE, or in a PRACK: the call ends); either way the
offerer gets the refusal with its Warning. What to build and what to note is
pure (the functions below); the class does the I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from quietwire.protocols.sip.message import Response
from quietwire.signaling.contexts import Branch, Context
from quietwire.signaling.dialogs import Dialog, Leg, Party, Side, other
from quietwire.signaling.early import final_sdp, offer_to_answer, provisional_sdp, strip_sdp
from quietwire.signaling.failures import refusal_answer
from quietwire.signaling.media import MediaPlanner, Refusal, message_tags, reversed_tags
from quietwire.signaling.routing import OFFERS_IN_DIALOG, ProxyAddress
from quietwire.signaling.sdpversion import continued
from quietwire.signaling.targets import Router
from quietwire.signaling.transactions import FORWARDS, Transactions

#: Ends a call (established or ringing) for a reason: ``Proxy.terminate``.
EndCall = Callable[[str, str], Awaitable[bool]]


class DialogNotes(Protocol):
    """Where the dialogs a 2xx sets up go, and the SDP each phone then holds: a
    :class:`~quietwire.signaling.dialogs.DialogStore`."""

    async def record(self, dialog: Dialog) -> None: ...

    async def forwarded_sdp(self, call_id: str, to: Party, sdp: bytes) -> None: ...


class Answers:
    def __init__(
        self,
        *,
        address: ProxyAddress,
        media: MediaPlanner,
        dialogs: DialogNotes,
        tx: Transactions,
        router: Router,
        end_call: EndCall,
    ) -> None:
        self.address, self.media, self.dialogs = address, media, dialogs
        self.tx, self.router, self.end_call = tx, router, end_call

    async def provisional(self, context: Context, branch: Branch, response: Response) -> bool:
        """Plan an 18x's SDP (early media, an offer in a reliable 18x: see .early);
        False when the 18x must not go on (its fork was answered for, refused or is
        being cancelled: its answer must not take the relay from the call's)."""
        if branch.final is not None or branch.cancelled or context.answered:
            return False
        planned = await provisional_sdp(self.media, context, response)
        if isinstance(planned, Refusal):
            await self._refuse_early(context, branch, planned)
            return False
        if planned is None:
            strip_sdp(response)
        else:
            response.body = planned
        return True

    async def final(self, context: Context, branch: Branch, ok: Response) -> bool:
        """Plan a 2xx's SDP (``ok``, as it goes to the offerer) and record what it
        sets up: the dialog of an initial INVITE, the SDP each phone now holds in
        one; False when the answer is refused (the branch's final is the refusal)."""
        planned = await final_sdp(self.media, context, ok)
        if isinstance(planned, Refusal):
            await self._refuse_answer(context, branch, ok, planned)
            return False
        if planned is not None:
            ok.body = planned
        dialog, party = context.dialog, context.party
        if dialog and party and ok.body and ok.cseq.method in OFFERS_IN_DIALOG:
            ok.body = continued(ok.body, dialog.leg(party).sdp)
        if context.initial_invite:
            recorded = recorded_dialog(context, branch, ok)
            if recorded is not None:
                await self.dialogs.record(recorded)
        else:
            for to, sdp in sdp_sent(context, branch, ok.body):
                await self.dialogs.forwarded_sdp(context.request.call_id, to, sdp)
        return True

    async def prack(self, context: Context) -> bool | None:
        """A PRACK answering the offer of a reliable 18x (RFC 3262 section 5) is
        planned like the ACK's answer to a 2xx's offer: True once it is; refused,
        the PRACK gets the refusal and the ringing call ends (False); None when
        the request is no such PRACK."""
        request = context.request
        ringing = offer_to_answer(self.tx.servers, request)
        if ringing is None:
            return None
        planned = await self.media.answer(
            request.call_id,
            request.body,
            from_caller=True,
            tags=reversed_tags(request),
            provisional=True,
        )
        if isinstance(planned, Refusal):
            await self.tx.respond(context, refusal_answer(request, planned, self.address.host))
            await self.end_call(request.call_id, planned.warning)
            return False
        ringing.early.offer_answered = True
        request.body = planned
        return True

    async def _refuse_early(self, context: Context, branch: Branch, refusal: Refusal) -> None:
        """An early answer (or offer) we refuse: CANCEL its fork, whose answer is the
        refusal (with its Warning); the caller gets it unless another fork answers."""
        FORWARDS("INVITE", "early-sdp-refused").inc()
        self.tx.cancel_branch(branch, refusal.warning)
        branch.final = refusal_answer(context.request, refusal, self.address.host)
        if refusal.status == 503:
            await self._unavailable(context, branch.final)

    async def _refuse_answer(
        self, context: Context, branch: Branch, ok: Response, refusal: Refusal
    ) -> None:
        """A 2xx whose media we refuse. To an initial INVITE: the callee's dialog
        exists, so ACK and BYE it. To a re-INVITE (a downgrade mid-call): end the
        call. Either way the offerer gets the refusal as this branch's answer."""
        branch.final = refusal_answer(context.request, refusal, self.address.host)
        FORWARDS("INVITE", "answer-refused").inc()
        if not context.initial_invite:
            await self.end_call(ok.call_id, refusal.warning)
            return
        dialog = answered_dialog(context, branch, ok)
        if dialog is not None:
            for message in dialog.refuse_answer(self.address.via, refusal.warning):
                await self.router.send(branch.target, message)
        if refusal.status == 503:
            await self._unavailable(context, branch.final)

    async def _unavailable(self, context: Context, answer: Response) -> None:
        """Media planning away when an INVITE was answered: the caller hears our own
        503 with Retry-After now (RFC 3261 section 21.5.4), not the 500 a downstream
        503 becomes (section 16.7 step 6); other branches are cancelled and the
        call's media freed (or its end queued for keyagreement's return)."""
        if context.finished:
            return
        context.finished = True
        for pending in context.pending:
            self.tx.cancel_branch(pending, "media planning unavailable")
        await self.tx.respond(context, answer)
        await self.media.end(context.request.call_id, message_tags(context.request))


def answered_dialog(context: Context, branch: Branch, ok: Response) -> Dialog | None:
    """The dialog a 2xx to an initial INVITE set up (None without both Contacts)."""
    request = context.request
    caller_contact = request.headers.get("Contact")
    callee_contact = ok.headers.get("Contact")
    if not caller_contact or not callee_contact:
        return None
    return Dialog(
        request.call_id,
        request.cseq.number,
        Side(context.upstream.id, caller_contact, request.headers.get("From") or ""),
        Side(branch.target.flow_id, callee_contact, ok.headers.get("To") or ""),
    )


def recorded_dialog(context: Context, branch: Branch, ok: Response) -> Dialog | None:
    """That dialog with the SDP each side was sent: the callee, the INVITE's as
    forwarded; the caller, the 2xx's as forwarded (``ok``), or the one its fork's
    18x carried when the 2xx has none."""
    dialog = answered_dialog(context, branch, ok)
    if dialog is None:
        return None
    sent = ok.body or context.early.sent_to_caller(ok.to.tag or "")
    caller = Leg(sent, context.request.cseq.number)
    return replace(dialog, caller_leg=caller, callee_leg=Leg(branch.request.body))


def sdp_sent(context: Context, branch: Branch, answer: bytes) -> list[tuple[Party, bytes]]:
    """A 2xx to a phone's in-dialog offer (or request for one): what each side
    was sent now stands (RFC 3264 section 8), as (the party it went to, the SDP);
    nothing outside a dialog's own request that carries offers."""
    party = context.party
    if party is None or context.request.method not in OFFERS_IN_DIALOG:
        return []
    sent = [(other(party), branch.request.body), (party, answer)]
    return [(to, sdp) for to, sdp in sent if sdp]
