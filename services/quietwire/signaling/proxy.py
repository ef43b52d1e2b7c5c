"""The stateful proxy (RFC 3261 section 16): the async shell around pure decisions.

Initial requests need an authenticated user whose From is their own address
(no open relay); they go to every live binding of the callee (parallel
forking), each down the flow it registered from. We Record-Route with a
signed token (:mod:`.tokens`) naming both sides' flows, bound to the Call-ID,
so in-dialog requests find their way back over the same connections, on
whichever replica holds them. An in-dialog request skips authentication only
when it is the recorded dialog's own, on its party's flow (:mod:`.routing`);
anything else is authenticated like an initial request. Responses follow our
Via, which names the replica whose transaction they belong to.

What to decide lives in :mod:`.routing`, :mod:`.builders` and :mod:`.tokens`;
the transactions (and a 500 for any request whose handling raises) in
:mod:`.transactions`; the SDP that comes back in responses (and a PRACK's
answer), its planning and refusals, in :mod:`.answers`. This class looks things
up and takes the decisions' turns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from quietwire.protocols.clock import Clock
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Request, Response
from quietwire.protocols.sip.transaction import (
    State,
    Timeout,
)
from quietwire.protocols.sip.uri import SipUri
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.signaling.answers import Answers
from quietwire.signaling.auth import Authenticator, Verdict
from quietwire.signaling.builders import (
    best_response,
    final,
    forwarded,
    refused,
)
from quietwire.signaling.contexts import Branch, Context, ServerTable
from quietwire.signaling.dialogs import Dialog, DialogStore, Party, other
from quietwire.signaling.early import early_party
from quietwire.signaling.errorlog import sip_errors
from quietwire.signaling.failures import refusal_answer
from quietwire.signaling.flows import Flow
from quietwire.signaling.locations import Unproven
from quietwire.signaling.locator import Locator
from quietwire.signaling.media import (
    MediaPlanner,
    Offer,
    OfferKind,
    Refusal,
    dialog_tags,
    message_tags,
    reversed_tags,
)
from quietwire.signaling.routing import (
    OFFERS_IN_DIALOG,
    OFFERS_INITIAL,
    RECORD_ROUTED,
    Membership,
    ProxyAddress,
    arrival_refusal,
    domain_answer,
    identity_refusal,
    in_dialog_offer,
    membership,
    party_refusal,
)
from quietwire.signaling.sdpversion import continued
from quietwire.signaling.targets import Router, Target
from quietwire.signaling.tokens import RouteToken, RouteTokens
from quietwire.signaling.transactions import FORWARDS, Transactions
from quietwire.signaling.uac import PlatformRequests, with_cseq

log = logging.getLogger(__name__)


class Proxy:
    def __init__(
        self,
        *,
        address: ProxyAddress,
        auth: Authenticator,
        locator: Locator,
        dialogs: DialogStore,
        router: Router,
        media: MediaPlanner,
        tokens: RouteTokens,
        servers: ServerTable,
        clock: Clock,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self.auth, self.locator, self.dialogs = auth, locator, dialogs
        self.router, self.media, self.tokens = router, media, tokens
        #: Transactions run on ``clock``; Record-Route tokens expire by the ``wall``
        #: clock, which every replica shares.
        self.clock, self.wall = clock, wall
        self.errors = sip_errors(log, clock)
        self.tx = Transactions(servers, router, clock, self.errors, self._release)
        #: Requests the platform sends itself (MoveCall's re-INVITEs): their responses.
        self.uac = PlatformRequests(router, address, clock)
        #: The SDP that comes back (18x, 2xx, a PRACK's answer) and its refusals.
        self.answers = Answers(
            address=address,
            media=media,
            dialogs=dialogs,
            tx=self.tx,
            router=router,
            end_call=self.terminate,
        )

    @property
    def servers(self) -> ServerTable:
        """Live server transactions (what a drain waits for)."""
        return self.tx.servers

    # -- entry points ----------------------------------------------------------------

    async def request(self, flow: Flow, request: Request) -> None:
        if request.method == "CANCEL":
            await self.tx.cancel(flow, request)
            return
        if await self.tx.absorbed(request):
            return
        refusal = arrival_refusal(request, self.address)
        if refusal is not None:
            if request.method != "ACK":  # an ACK is never answered
                flow.send_message(refusal)
            return
        if request.method == "ACK":
            try:
                await self._forward_ack(flow, request)
            except Exception as exc:
                self.errors.record("ACK", exc)
            return
        context = self.tx.open(flow, request)
        if context is not None:
            await self.tx.guarded(context, "request", self._handle(context))

    async def response(self, response: Response) -> None:
        """A response from downstream: ours to handle, or another replica's."""
        try:
            via = response.vias[0]
        except (ParseError, IndexError):
            return
        owner = via.params.get("qwr")
        if owner is None:
            return  # not through us: drop
        if owner != self.address.replica:
            await self.router.hand_over(owner, response)
            return
        if response.cseq.method == "CANCEL":
            return  # the answer to a CANCEL we sent: nothing to do (RFC 3261 16.10)
        if self.uac.receive(response):
            return
        found = self.tx.branch_of(via.branch or "", response.cseq.method)
        if found is None:
            return  # late: the transaction is gone (2xx retransmissions over TLS do not happen)
        context, branch = found
        branch.tx.receive(response)
        await self.tx.guarded(context, "response", self._client_events(context, branch))

    async def timers_due(self) -> None:
        """Returns once a transaction timer is due: then :meth:`run_timers`."""
        await self.tx.due()

    async def run_timers(self) -> None:
        for context in self.tx.poll():
            for branch in list(context.branches.values()):
                await self.tx.guarded(context, "timer", self._client_events(context, branch))
        await self.tx.resend()

    async def _release(self, request: Request) -> None:
        await self.media.end(request.call_id, message_tags(request))

    # -- routing -------------------------------------------------------------------------

    async def _handle(self, context: Context) -> None:
        try:
            await self._route(context)
            return
        except ParseError as exc:  # a header read only now: the answer the parser gives
            answer = final(context.request, exc.status, exc.reason[:60])
        await self.tx.respond(context, answer)  # after the handler (runtime/aio.py says why)

    async def _route(self, context: Context) -> None:
        request = context.request
        if request.to.tag is not None:
            await self._route_in_dialog(context)
            return
        if self.address.addressed_to_us(request):
            self.tx.stateless(context, *domain_answer(request))
            return
        uri = request.request_uri
        proven = await self._proven_lookup(context, uri)
        if proven is None:
            if not await self._admitted(context, in_dialog=False, remembered=False):
                return
        elif not await self._as_themselves(context, proven[0], in_dialog=False):
            return
        await self._trying(context)
        bindings = await self.locator.bindings(uri) if proven is None else proven[1]
        if bindings is None:
            await self.tx.respond(context, final(request, 404, "Not Found"))
            return
        # Policy before availability: a plain-RTP offer gets its 488 either way.
        if request.method in OFFERS_INITIAL and request.body:
            parties = (request.from_.uri.aor, uri.aor)
            if not await self._plan_offer(context, OfferKind.INITIAL, parties=parties):
                return
        elif request.method in OFFERS_INITIAL:
            context.offer_in_2xx_from_callee = True  # planned at the 2xx
        if not bindings:
            await self.tx.respond(context, final(request, 480, "Temporarily Unavailable"))
            if request.method == "INVITE":
                await self.media.end(request.call_id, message_tags(request))
            return
        context.initial_invite = request.method == "INVITE"
        if context.initial_invite:
            callee_replicas = sorted({reg.replica for reg in bindings})  # where its BYE may come
            log.info(
                "call routed", extra={"branches": len(bindings), "callee_replicas": callee_replicas}
            )
        for reg in bindings:
            target = Target(reg.replica, reg.flow_id)
            contact = str(SipUri.parse(reg.contact.strip("<>")))
            out = forwarded(request, contact, self.address.via(target.flow_id))
            if request.method in RECORD_ROUTED:
                self.tokens.record_route(out, context.upstream.id, reg.flow_id, self.wall())
            await self.tx.fork(context, target, out)
        await self._check_done(context)

    async def _proven_lookup(
        self, context: Context, uri: SipUri
    ) -> tuple[str, list[Registration]] | None:
        """The authenticated user and the callee's bindings in one round trip, for
        credentials that verify against the HA1 remembered for them (the usual
        INVITE after its 407) and a callee who exists; None, nothing spent, for
        anything else, which then takes the full way (the full check, a lookup)."""
        proof = self.auth.proof(context.request, proxy=True)
        if proof is None:
            return None
        try:
            bindings = await self.auth.proven(
                proof, lambda precondition: self.locator.bindings(uri, precondition)
            )
        except Unproven:
            return None
        if bindings is None:
            return None
        context.upstream.authenticated = True  # lifts the pre-auth body limit
        return proof.username, bindings

    async def _admitted(
        self, context: Context, *, in_dialog: bool, remembered: bool = True
    ) -> bool:
        """Authenticated and sending as themselves; False once the request is answered.
        ``remembered``: :meth:`.auth.Authenticator.check`'s (False once the proof failed)."""
        username = await self._authenticate(context, remembered)
        if username is None:
            return False
        return await self._as_themselves(context, username, in_dialog=in_dialog)

    async def _as_themselves(self, context: Context, username: str, *, in_dialog: bool) -> bool:
        """The authenticated ``username`` sends as themselves; False once refused."""
        request = context.request
        refusal = identity_refusal(request, username, self.address.domain, in_dialog=in_dialog)
        if refusal is not None:
            await self.tx.respond(context, final(request, *refusal))
            return False
        return True

    async def _authenticate(self, context: Context, remembered: bool) -> str | None:
        """The authenticated user, or None once the request is answered (a
        challenge, or 403 for wrong credentials: both stateless)."""
        request = context.request
        result = await self.auth.check(request, proxy=True, remembered=remembered)
        if result.verdict is Verdict.OK:
            context.upstream.authenticated = True  # lifts the pre-auth body limit
            return result.username
        if result.verdict in (Verdict.CHALLENGE, Verdict.STALE):
            stale = result.verdict is Verdict.STALE
            challenge = self.auth.challenge(request, proxy=True, stale=stale)
            self.tx.stateless(context, challenge, "challenged")
        else:
            self.tx.stateless(context, final(request, 403, "Forbidden"), "forbidden")
        return None

    async def _trying(self, context: Context) -> None:
        """100 Trying to an INVITE we will forward (RFC 3261 section 16.2)."""
        if context.request.method == "INVITE":
            await self.tx.respond(context, final(context.request, 100, "Trying"))

    async def _route_in_dialog(self, context: Context) -> None:
        request = context.request
        token = self.tokens.take(request, self.wall())
        dialog, taken = await self._in_dialog_record(context, token)
        member = membership(dialog, request, context.upstream.id)
        if not member.trusted:
            if not await self._admitted(context, in_dialog=True):
                return
            if party_refusal(dialog, member, request):
                await self.tx.respond(context, final(request, 403, "Not Your Dialog"))
                return
        await self._trying(context)
        target = await self._in_dialog_target(request, token)
        if target is None:
            await self.tx.respond(context, final(request, 404, "No Route To Target"))
            return
        answer = await self.answers.prack(context)
        if answer is False:
            return
        offerer = member
        if dialog is None:  # an early dialog's PRACK or UPDATE (see .early)
            offerer = Membership(early_party(token, request), on_flow=False)
        offer = None if answer else in_dialog_offer(request, offerer)
        if isinstance(offer, Refusal):
            await self.tx.respond(context, refused(request, offer, self.address.host))
            return
        from_callee = offerer.party is Party.CALLEE
        if offer is not None and not request.body:
            context.offer_in_2xx_from_callee = not from_callee  # the receiver's offer
        elif offer is not None and not await self._plan_offer(
            context, offer, from_callee=from_callee
        ):
            return
        out = forwarded(request, None, self.address.via(target.flow_id))
        if member.party is not None and dialog is not None:
            context.party, context.dialog = member.party, dialog
            await self._renumber(out, dialog, member.party)
            if out.body and request.method in OFFERS_IN_DIALOG:
                out.body = continued(out.body, dialog.leg(other(member.party)).sdp)
        if request.method == "BYE" and member.party is not None:
            if not taken:  # the call's own BYE ends it
                await self.dialogs.take(request.call_id)
            await self.media.end(request.call_id, message_tags(request))
        await self.tx.fork(context, target, out)
        await self._check_done(context)

    async def _in_dialog_record(
        self, context: Context, token: RouteToken | None
    ) -> tuple[Dialog | None, bool]:
        """The recorded dialog of an in-dialog request, and whether it was taken
        already: a BYE with our Route token (so it will be forwarded) that is a
        party's own on its flow takes it in the same round trip as the check."""
        request = context.request
        if request.method == "BYE" and token is not None:
            return await self.dialogs.for_bye(request, context.upstream.id)
        return await self.dialogs.get(request.call_id), False

    async def _renumber(self, out: Request, dialog: Dialog, party: Party) -> None:
        """A phone's in-dialog request, its CSeq raised above the numbers the
        platform took in its direction (RFC 3261 section 12.2.1.1: the receiver
        refuses going back). Its number is noted first, so that a number the
        platform takes afterwards is above it."""
        number = out.cseq.number
        offset: int | None = dialog.leg(party).offset
        if out.method != "BYE":  # a BYE takes the record: nothing to note
            offset = await self.dialogs.phone_request(dialog.call_id, party, number)
        if offset:
            with_cseq(out, number + offset)

    async def _in_dialog_target(self, request: Request, token: RouteToken | None) -> Target | None:
        """Down the flow our Route ``token`` names, or to the GRUU's binding when
        that flow is gone (a phone that reconnected)."""
        target = Target.of_flow(token.toward(request.from_.tag)) if token is not None else None
        uri = request.request_uri
        gruu = uri.params.get("gr") and uri.host_key == self.address.domain
        if gruu and (target is None or not await self.locator.reachable(target)):
            bindings = await self.locator.bindings(uri) or []
            if bindings:
                target = Target(bindings[0].replica, bindings[0].flow_id)
        return target

    async def _forward_ack(self, flow: Flow, request: Request) -> None:
        """The ACK of a 2xx: end to end, no transaction (RFC 3261 section 16.11).
        It cannot be challenged, so it goes only with a token of its own Call-ID
        and only in the recorded dialog whose tags it carries (the caller's on
        its flow, just after the 2xx: from this replica's copy of the dialog)."""
        token = self.tokens.take(request, self.wall())
        if token is None:
            return
        dialog = await self.dialogs.for_ack(request, flow.id)
        party = dialog.party(request) if dialog is not None else None
        if dialog is None or party is None:
            FORWARDS("ACK", "no-dialog").inc()
            return
        if request.body:
            # The answer to an offer in a 2xx: planned like any answer. An ACK has
            # no answer of its own to refuse with, so a refused one ends the call
            # (RFC 3261 section 13.2.2.4: a UAC that cannot accept the offer BYEs).
            planned = await self.media.answer(
                request.call_id,
                request.body,
                from_caller=party is Party.CALLER,
                tags=reversed_tags(request),
            )
            if isinstance(planned, Refusal):
                FORWARDS("ACK", "answer-refused").inc()
                await self.terminate(request.call_id, planned.warning)
                return
            request.body = continued(planned, dialog.leg(other(party)).sdp)
            await self.dialogs.forwarded_sdp(request.call_id, other(party), request.body)
        target = Target.of_flow(token.toward(request.from_.tag))
        out = forwarded(request, None, self.address.via(target.flow_id))
        if dialog.leg(party).offset:
            with_cseq(out, dialog.leg(party).forwarded(request.cseq.number))
        await self.router.send(target, out)

    async def _plan_offer(
        self,
        context: Context,
        kind: OfferKind,
        *,
        from_callee: bool = False,
        parties: tuple[str, str] = ("", ""),
    ) -> bool:
        """Let the media planner see (and rewrite) an SDP offer; False if it refused the call."""
        request = context.request
        planned = await self.media.offer(
            Offer(request.call_id, kind, request.body, message_tags(request), from_callee, *parties)
        )
        if isinstance(planned, Refusal):
            await self.tx.respond(context, refusal_answer(request, planned, self.address.host))
            return False
        request.body = planned
        context.offer_from_callee = from_callee
        return True

    # -- responses -----------------------------------------------------------------------

    async def _client_events(self, context: Context, branch: Branch) -> None:
        tx = branch.tx
        for message in tx.to_send:  # ACKs of non-2xx finals, built by the transaction
            await self.router.send(branch.target, message)
        tx.to_send.clear()
        events, tx.to_tu = tx.to_tu, []
        for event in events:
            if isinstance(event, Timeout):
                if branch.final is None:
                    branch.final = final(context.request, 408, "Request Timeout")
                continue
            assert isinstance(event, Response)
            await self._branch_response(context, branch, event)
        if tx.terminated:
            self.tx.drop_branch(branch)
        await self._check_done(context)

    async def _branch_response(self, context: Context, branch: Branch, response: Response) -> None:
        upstream = response.copy()
        upstream.headers.pop_first("Via")
        if response.cseq.number != context.request.cseq.number:
            with_cseq(upstream, context.request.cseq.number)  # the phone's own (_renumber)
        status = response.status
        if status == 100:
            return
        if status < 200:
            branch.ringing_since = branch.ringing_since or self.clock.now()
            if upstream.body and not await self.answers.provisional(context, branch, upstream):
                return
            await self.tx.respond(context, upstream)
            return
        if status < 300:
            # The branch stays pending while the planner sees the answer and the
            # dialog is recorded, so the timer loop cannot pick a final response
            # for the context meanwhile; the dialog exists before the caller's ACK.
            if not await self.answers.final(context, branch, upstream):
                return
            branch.final = response
            context.answered = True
            await self.tx.respond(context, upstream)
            for other in context.pending:
                self.tx.cancel_branch(other, "answered elsewhere")
            return
        if branch.final is None:  # not a fork we refused and CANCELled (its 487)
            branch.final = upstream
        if status >= 600:
            for other in context.pending:
                self.tx.cancel_branch(other, "declined")

    async def terminate(self, call_id: str, reason: str) -> bool:
        """End a call: established, a BYE to each phone; still ringing here, a
        CANCEL to each branch and 488 to the caller. Then free its media."""
        dialog = await self.dialogs.take(call_id)
        if dialog is None:
            return await self._abandon(call_id, reason)
        for flow_id, bye in dialog.byes(self.address.via, reason):
            sent = await self.router.send(Target.of_flow(flow_id), bye)
            FORWARDS("BYE", "terminated" if sent else "unreachable").inc()
        await self.media.end(call_id, dialog_tags(dialog.caller.address, dialog.callee.address))
        log.info("call terminated", extra={"call_id": call_id, "reason": reason})
        return True

    async def _abandon(self, call_id: str, reason: str) -> bool:
        ringing = [
            c
            for c in self.servers
            if c.initial_invite and c.request.call_id == call_id and not (c.answered or c.finished)
        ]
        for context in ringing:
            for branch in context.pending:
                self.tx.cancel_branch(branch, reason)
            refusal = Refusal(488, f"quietwire: call ended: {reason}")
            await self.tx.respond(context, refused(context.request, refusal, self.address.host))
            FORWARDS("INVITE", "abandoned").inc()
        if not ringing:
            return False
        await self.media.end(call_id, message_tags(ringing[0].request))
        log.info("ringing call ended", extra={"call_id": call_id, "reason": reason})
        return True

    async def _check_done(self, context: Context) -> None:
        if context.finished or context.pending or not context.branches:
            return
        context.finished = True
        if context.server.state not in (State.TRYING, State.PROCEEDING):
            return
        if not context.answered:
            finals = [b.final for b in context.branches.values() if b.final is not None]
            await self.tx.respond(context, best_response(finals, context.request))
            if context.initial_invite:
                # No call: free the relay.
                await self.media.end(context.request.call_id, message_tags(context.request))
