"""The stateful proxy (RFC 3261 section 16): routing, forking, CANCEL, responses.

Initial requests need an authenticated user whose From is their own address
(no open relay); they go to every live binding of the callee (parallel
forking), each down the flow it registered from. We Record-Route with a
signed token naming both sides' flows and the caller's From tag, so in-dialog
requests find their way back over the same connections, on whichever
replica holds them. Responses follow our Via, which names the replica whose
transaction they belong to.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field

from prometheus_client import Counter

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Clock,
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
    Timeout,
)
from quietwire.protocols.sip.uri import SipUri
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.runtime.registry import ReplicaRegistry
from quietwire.signaling.auth import Authenticator, Verdict
from quietwire.signaling.dialogs import Dialog, DialogStore, Side, new_branch, our_via
from quietwire.signaling.flows import Flow, flow_transport, reliable
from quietwire.signaling.locations import LocationStore
from quietwire.signaling.media import MediaPlanner, Refusal, dialog_tags, message_tags
from quietwire.signaling.targets import Router, Target
from quietwire.signaling.users import UserStore

log = logging.getLogger(__name__)

#: Timer C (RFC 3261 section 16.6 step 11): how long a branch may ring.
TIMER_C = 180.0
#: Methods an in-dialog or initial request may carry through us.
FORWARDED = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "PRACK",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
    }
)

FORWARDS = Counter(
    "quietwire_sip_proxied", "Requests proxied, by method and outcome", ["method", "outcome"]
)

ClientTx = ClientInviteTransaction | ClientNonInviteTransaction
ServerTx = ServerInviteTransaction | ServerNonInviteTransaction


@dataclass(eq=False)
class Branch:
    branch: str
    target: Target
    tx: ClientTx
    request: Request
    final: Response | None = None
    cancelled: bool = False
    ringing_since: float | None = None


@dataclass(eq=False)
class Context:
    """One request we forward: its server transaction upstream, its branches downstream."""

    request: Request
    server: ServerTx
    upstream: Flow
    branches: dict[str, Branch] = field(default_factory=dict)
    answered: bool = False
    finished: bool = False
    initial_invite: bool = False
    #: Set when the media planner saw this INVITE's offer: which side made it.
    offer_from_callee: bool | None = None

    @property
    def pending(self) -> list[Branch]:
        return [b for b in self.branches.values() if b.final is None]


@dataclass(frozen=True, slots=True)
class RouteToken:
    """Both flows of a dialog and the caller's From tag, signed (in our Record-Route)."""

    caller: str
    callee: str
    ftag: str

    def sign(self, key: bytes) -> str:
        data = f"{self.caller}|{self.callee}|{self.ftag}".encode()
        return hmac.new(key, data, hashlib.sha256).hexdigest()[:16]


class Proxy:
    def __init__(
        self,
        *,
        domain: str,
        host: str,
        port: int,
        replica: str,
        auth: Authenticator,
        tcp_port: int = 0,
        udp_port: int = 0,
        users: UserStore,
        locations: LocationStore,
        replicas: ReplicaRegistry,
        dialogs: DialogStore,
        router: Router,
        media: MediaPlanner,
        clock: Clock,
        token_key: bytes,
    ) -> None:
        self.domain = domain.lower()
        self.host, self.port, self.replica = host, port, replica
        #: Our listening port per transport (what our Via and Record-Route name).
        self.ports = {"TLS": port, "TCP": tcp_port or port, "UDP": udp_port or port}
        self.auth, self.users, self.locations, self.replicas = auth, users, locations, replicas
        self.router, self.media, self.clock = router, media, clock
        self.dialogs = dialogs
        self.token_key = token_key
        self.servers: dict[ServerKey, Context] = {}
        self.clients: dict[str, tuple[Context, Branch]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._resend: list[Context] = []

    # -- entry points ----------------------------------------------------------------

    async def request(self, flow: Flow, request: Request) -> None:
        key = ServerKey.of(request)
        if request.method == "ACK" and key in self.servers:
            self.servers[key].server.receive(request)  # ACK of our non-2xx final
            await self._flush(self.servers[key])
            return
        if request.method == "CANCEL":
            await self._cancel(flow, request)
            return
        if key in self.servers:
            self.servers[key].server.receive(request)  # a retransmission
            await self._flush(self.servers[key])
            return
        if request.method not in FORWARDED:
            flow.send_message(reply(request, 405, "Method Not Allowed"))
            return
        if request.method == "ACK":
            await self._forward_ack(request)
            return
        server: ServerTx = (
            ServerInviteTransaction(request, reliable(flow.id), self.clock)
            if request.method == "INVITE"
            else ServerNonInviteTransaction(request, reliable(flow.id), self.clock)
        )
        context = Context(request, server, flow)
        self.servers[key] = context
        if request.method == "INVITE":
            await self._respond(context, reply(request, 100, "Trying"))
        try:
            await self._route(context)
        except ParseError as exc:
            await self._respond(context, reply(request, exc.status, exc.reason[:60]))

    async def response(self, response: Response) -> None:
        """A response from downstream: ours to handle, or another replica's."""
        try:
            via = response.vias[0]
        except (ParseError, IndexError):
            return
        owner = via.params.get("qwr")
        if owner is None:
            return  # not through us: drop
        if owner != self.replica:
            await self.router.hand_over(owner, response)
            return
        if response.cseq.method == "CANCEL":
            return  # the answer to a CANCEL we sent: nothing to do (RFC 3261 16.10)
        found = self.clients.get(via.branch or "")
        if found is None or found[1].request.method != response.cseq.method:
            return  # late: the transaction is gone (2xx retransmissions over TLS do not happen)
        context, branch = found
        branch.tx.receive(response)
        await self._client_events(context, branch)

    def poll(self) -> list[Context]:
        """Run transaction timers; returns contexts that need attention."""
        touched = []
        for context, branch in list(self.clients.values()):
            branch.tx.poll()
            now = self.clock.now()
            if (
                branch.ringing_since
                and now - branch.ringing_since > TIMER_C
                and not branch.cancelled
            ):
                self._cancel_branch(branch, "timer C")
            if branch.tx.to_tu or branch.tx.to_send or branch.tx.terminated:
                touched.append(context)
        for context in list(self.servers.values()):
            context.server.poll()
            if context.server.to_send:
                self._resend.append(context)  # a final response again, over UDP (timer G)
            if context.server.terminated and context.finished:
                self.servers.pop(ServerKey.of(context.request), None)
        return touched

    async def run_timers(self) -> None:
        for context in self.poll():
            for branch in list(context.branches.values()):
                await self._client_events(context, branch)
        resend, self._resend = self._resend, []
        for context in resend:
            await self._flush(context)

    # -- routing -------------------------------------------------------------------------

    async def _route(self, context: Context) -> None:
        request = context.request
        to_tag = request.to.tag
        if to_tag is not None:
            await self._route_in_dialog(context)
            return
        uri = request.request_uri
        if uri.user is None and uri.host_key == self.domain:
            if request.method == "OPTIONS":
                ok = reply(request, 200, "OK", to_tag=secrets.token_hex(5))
                ok.headers.add("Allow", ", ".join(sorted(FORWARDED | {"REGISTER"})))
                ok.headers.add("Supported", "outbound, gruu, path")
                await self._respond(context, ok)
                return
            await self._respond(context, reply(request, 404, "Not Found"))
            return
        result = await self.auth.check(request, proxy=True)
        if result.verdict in (Verdict.CHALLENGE, Verdict.STALE):
            challenge = self.auth.challenge(
                request, proxy=True, stale=result.verdict is Verdict.STALE
            )
            await self._respond(context, challenge)
            return
        if result.verdict is Verdict.FAILED:
            await self._respond(context, reply(request, 403, "Forbidden"))
            return
        caller = request.from_.uri
        if caller.user_unescaped != result.username or caller.host_key != self.domain:
            await self._respond(context, reply(request, 403, "From Is Not You"))
            return
        if uri.host_key != self.domain:
            await self._respond(context, reply(request, 403, "No Relaying"))
            return
        bindings = await self._targets(uri)
        if bindings is None:
            await self._respond(context, reply(request, 404, "Not Found"))
            return
        # Policy before availability: a plain-RTP offer gets its 488 either way.
        if not await self._plan_offer(context, caller.aor, uri.aor):
            return
        if not bindings:
            await self._respond(context, reply(request, 480, "Temporarily Unavailable"))
            if request.method == "INVITE":
                await self.media.end(request.call_id, message_tags(request))
            return
        context.initial_invite = request.method == "INVITE"
        ftag = request.from_.tag or ""
        for reg in bindings:
            target = Target(reg.replica, reg.flow_id)
            out = self._prepare(request, SipUri.parse(reg.contact.strip("<>")), target)
            if request.method in ("INVITE", "SUBSCRIBE", "REFER"):
                token = RouteToken(context.upstream.id, reg.flow_id, ftag)
                for route in self._record_routes(token):
                    out.headers.add("Record-Route", route, first=True)
            await self._fork(context, target, out)
        await self._check_done(context)

    async def _plan_offer(
        self, context: Context, caller: str, callee: str, from_callee: bool = False
    ) -> bool:
        """Let the media planner see (and rewrite) an SDP offer; False if it refused the call.

        Offers come in an INVITE, or mid-call in a re-INVITE or an UPDATE (RFC 3311)."""
        request = context.request
        in_dialog = not caller
        if not request.body or request.method not in (
            ("INVITE", "UPDATE") if in_dialog else ("INVITE",)
        ):
            return True
        planned = await self.media.offer(
            request.call_id, caller, callee, request.body, from_callee, tags=message_tags(request)
        )
        if isinstance(planned, Refusal):
            await self._respond(context, self._refused(request, planned))
            return False
        request.body = planned
        context.offer_from_callee = from_callee
        return True

    async def _targets(self, uri: SipUri) -> list[Registration] | None:
        """Live bindings for a request URI (AOR or GRUU); None when the user does not exist."""
        if uri.user is None or await self.users.get(uri.user_unescaped or "") is None:
            return None
        bindings = await self.locations.bindings(uri.aor)
        gruu = uri.params.get("gr")
        if gruu:
            bindings = [b for b in bindings if b.instance_id.strip("<>") == gruu]
        alive = []
        for reg in bindings:
            if reg.replica == self.replica:
                if self.router.flows.get(reg.flow_id) is not None:
                    alive.append(reg)
            elif await self.replicas.address(reg.replica):
                alive.append(reg)
        return alive

    async def _route_in_dialog(self, context: Context) -> None:
        request = context.request
        token = self._pop_our_route(request)
        target: Target | None = None
        toward_callee = True
        if token is not None:
            toward_callee = request.from_.tag == token.ftag
            target = Target.of_flow(token.callee if toward_callee else token.caller)
        uri = request.request_uri
        if uri.params.get("gr") and uri.host_key == self.domain:
            bindings = await self._targets(uri) or []
            if bindings and (target is None or not await self._flow_known(target)):
                target = Target(bindings[0].replica, bindings[0].flow_id)
        if target is None:
            await self._respond(context, reply(request, 404, "No Route To Target"))
            return
        if not await self._plan_offer(context, "", "", from_callee=not toward_callee):
            return
        if request.method == "BYE":
            await self.dialogs.take(request.call_id)
            await self.media.end(request.call_id, message_tags(request))
        await self._fork(context, target, self._prepare(request, None, target))
        await self._check_done(context)

    async def _flow_known(self, target: Target) -> bool:
        if target.replica == self.replica:
            return self.router.flows.get(target.flow_id) is not None
        return await self.replicas.address(target.replica) is not None

    async def _forward_ack(self, request: Request) -> None:
        """The ACK of a 2xx: end to end, no transaction (RFC 3261 section 16.11)."""
        token = self._pop_our_route(request)
        if token is None:
            return
        toward_callee = request.from_.tag == token.ftag
        target = Target.of_flow(token.callee if toward_callee else token.caller)
        await self.router.send(target, self._prepare(request, None, target, new_branch()))

    def _pop_our_route(self, request: Request) -> RouteToken | None:
        routes = request.headers.get_all("Route")
        if not routes:
            return None
        try:
            top = NameAddr.parse(routes[0]).uri
        except ParseError:
            return None
        params = top.params
        if "qws" not in params:
            return None
        request.headers.pop_first("Route")
        token = RouteToken(
            params.get("qwa") or "", params.get("qwb") or "", params.get("ftag") or ""
        )
        if not hmac.compare_digest(token.sign(self.token_key), params.get("qws") or ""):
            return None
        second = request.headers.get_all("Route")[:1]
        if second and f"qws={params.get('qws')}" in second[0]:
            request.headers.pop_first("Route")  # our other half of a double Record-Route
        return token

    def _record_routes(self, token: RouteToken) -> list[str]:
        """Our Record-Route, in adding order (the last ends on top, facing the callee).

        Two when the sides' transports differ (RFC 3261 section 16.6 step 4,
        RFC 5658): each side's route set then starts with the port it speaks."""
        sides = [flow_transport(token.caller), flow_transport(token.callee)]
        return [self._route_uri(token, t) for t in dict.fromkeys(sides)]

    def _route_uri(self, token: RouteToken, transport: str) -> str:
        return (
            f"<sip:{self.host}:{self.ports[transport]};transport={transport.lower()};lr"
            f";qwa={token.caller};qwb={token.callee};ftag={token.ftag}"
            f";qws={token.sign(self.token_key)}>"
        )

    def _via(self, flow_id: str, branch: str | None = None) -> str:
        transport = flow_transport(flow_id)
        return our_via(self.host, self.ports[transport], self.replica, branch, transport)

    def _prepare(
        self, request: Request, uri: SipUri | None, target: Target, branch: str | None = None
    ) -> Request:
        """The copy we send downstream: new R-URI, our Via on top, Max-Forwards less one."""
        out = request.copy()
        if uri is not None:
            out.uri = str(uri)
        forwards = request.headers.get("Max-Forwards")
        out.headers.set("Max-Forwards", str(int(forwards) - 1 if forwards else 69))
        out.headers.add("Via", self._via(target.flow_id, branch), first=True)
        return out

    async def _fork(self, context: Context, target: Target, out: Request) -> None:
        request = context.request
        forwards = request.headers.get("Max-Forwards")
        if forwards is not None and int(forwards) <= 0:
            await self._respond(context, reply(request, 483, "Too Many Hops"))
            return
        if any(
            v.params.get("qwr") and v.host == self.host and v.port in self.ports.values()
            for v in request.vias
        ):
            await self._respond(context, reply(request, 482, "Loop Detected"))
            return
        tx: ClientTx = (
            ClientInviteTransaction(out, reliable(target.flow_id), self.clock)
            if out.method == "INVITE"
            else ClientNonInviteTransaction(out, reliable(target.flow_id), self.clock)
        )
        branch = Branch(out.vias[0].branch or "", target, tx, out)
        context.branches[branch.branch] = branch
        self.clients[branch.branch] = (context, branch)
        tx.to_send.clear()
        if not await self.router.send(target, out):
            branch.final = reply(request, 480, "Temporarily Unavailable")
            FORWARDS.labels(out.method, "unreachable").inc()
            self._drop_branch(branch)
            return
        FORWARDS.labels(out.method, "forwarded").inc()

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
                    branch.final = reply(context.request, 408, "Request Timeout")
                continue
            assert isinstance(event, Response)
            await self._branch_response(context, branch, event)
        if tx.terminated:
            self._drop_branch(branch)
        await self._check_done(context)

    async def _branch_response(self, context: Context, branch: Branch, response: Response) -> None:
        upstream = response.copy()
        upstream.headers.pop_first("Via")
        status = response.status
        if status == 100:
            return
        if status < 200:
            branch.ringing_since = branch.ringing_since or self.clock.now()
            await self._respond(context, upstream)
            return
        if status < 300:
            # The branch stays pending while the planner sees the answer, so the timer
            # loop cannot pick a final response for the context in the meantime.
            if context.offer_from_callee is not None and upstream.body:
                planned = await self.media.answer(
                    response.call_id,
                    upstream.body,
                    from_caller=context.offer_from_callee,
                    tags=message_tags(response),
                )
                if isinstance(planned, Refusal):
                    await self._refuse_answer(context, branch, response, planned)
                    return
                upstream.body = planned
            branch.final = response
            context.answered = True
            await self._respond(context, upstream)
            if context.initial_invite:
                await self._record_dialog(context, branch, response)
            for other in context.pending:
                self._cancel_branch(other, "answered elsewhere")
            return
        branch.final = upstream
        if status >= 600:
            for other in context.pending:
                self._cancel_branch(other, "declined")

    def _refused(self, request: Request, refusal: Refusal) -> Response:
        refused = reply(request, refusal.status, refusal.reason)
        refused.headers.add("Warning", f'399 {self.host} "{refusal.warning}"')
        return refused

    async def _refuse_answer(
        self, context: Context, branch: Branch, ok: Response, refusal: Refusal
    ) -> None:
        """A 2xx whose media we refuse. To an initial INVITE: the callee's dialog
        exists, so ACK and BYE it. To a re-INVITE (a downgrade mid-call): end the
        call. Either way the offerer gets the refusal as this branch's answer."""
        branch.final = self._refused(context.request, refusal)
        FORWARDS.labels("INVITE", "answer-refused").inc()
        if not context.initial_invite:
            await self.terminate(ok.call_id, refusal.warning)
            return
        dialog = _dialog(context, branch, ok)
        if dialog is not None:
            for message in dialog.refuse_answer(self._via, refusal.warning):
                await self.router.send(branch.target, message)

    async def _record_dialog(self, context: Context, branch: Branch, ok: Response) -> None:
        dialog = _dialog(context, branch, ok)
        if dialog is not None:
            await self.dialogs.record(dialog)

    async def terminate(self, call_id: str, reason: str) -> bool:
        """End a call: established, a BYE to each phone; still ringing here, a
        CANCEL to each branch and 488 to the caller. Then free its media."""
        dialog = await self.dialogs.take(call_id)
        if dialog is None:
            return await self._abandon(call_id, reason)
        for flow_id, bye in dialog.byes(self._via, reason):
            sent = await self.router.send(Target.of_flow(flow_id), bye)
            FORWARDS.labels("BYE", "terminated" if sent else "unreachable").inc()
        await self.media.end(call_id, dialog_tags(dialog.caller.address, dialog.callee.address))
        log.info("call terminated", extra={"call_id": call_id, "reason": reason})
        return True

    async def _abandon(self, call_id: str, reason: str) -> bool:
        ringing = [
            c
            for c in self.servers.values()
            if c.initial_invite and c.request.call_id == call_id and not (c.answered or c.finished)
        ]
        for context in ringing:
            for branch in context.pending:
                self._cancel_branch(branch, reason)
            refusal = Refusal(488, f"quietwire: call ended: {reason}")
            await self._respond(context, self._refused(context.request, refusal))
            FORWARDS.labels("INVITE", "abandoned").inc()
        if not ringing:
            return False
        await self.media.end(call_id, message_tags(ringing[0].request))
        log.info("ringing call ended", extra={"call_id": call_id, "reason": reason})
        return True

    async def _check_done(self, context: Context) -> None:
        if context.finished or context.pending or not context.branches:
            return
        if context.server.state.value not in ("Trying", "Proceeding"):
            context.finished = True
            return
        context.finished = True
        if not context.answered:
            finals = [b.final for b in context.branches.values() if b.final is not None]
            await self._respond(context, _best(finals, context.request))
            if context.initial_invite:
                # No call: free the relay.
                await self.media.end(context.request.call_id, message_tags(context.request))

    def _cancel_branch(self, branch: Branch, reason: str) -> None:
        if branch.cancelled or branch.final is not None or branch.request.method != "INVITE":
            return
        branch.cancelled = True
        cancel = Request(method="CANCEL", uri=branch.request.uri)
        for name in ("Via", "From", "To", "Call-ID", "Route"):
            values = branch.request.headers.get_all(name)
            for value in values[:1] if name == "Via" else values:
                cancel.headers.add(name, value)
        cancel.headers.add("CSeq", f"{branch.request.cseq.number} CANCEL")
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("Reason", f'SIP;cause=200;text="{reason}"')
        self._background(self.router.send(branch.target, cancel))

    def _background(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop_branch(self, branch: Branch) -> None:
        self.clients.pop(branch.branch, None)

    async def _cancel(self, flow: Flow, request: Request) -> None:
        key = ServerKey.of(request)
        context = self.servers.get(ServerKey(key.branch, key.sent_by, "INVITE"))
        if context is None:
            flow.send_message(reply(request, 481, "Call/Transaction Does Not Exist"))
            return
        flow.send_message(reply(request, 200, "OK"))
        for branch in context.pending:
            self._cancel_branch(branch, "caller cancelled")

    async def _respond(self, context: Context, response: Response) -> None:
        if response.status > 100 and response.to.tag is None:
            # One of ours (a UAS tags its own, RFC 3261 section 8.2.6.2): tag it too,
            # so the ACK of a final response can name it.
            response.headers.set("To", f"{response.headers.get('To')};tag={secrets.token_hex(5)}")
        context.server.respond(response)
        if response.status >= 200 and not context.pending:
            context.finished = True
        await self._flush(context)

    async def _flush(self, context: Context) -> None:
        for message in context.server.to_send:
            context.upstream.send_message(message)
        context.server.to_send.clear()
        context.server.to_tu.clear()


def _dialog(context: Context, branch: Branch, ok: Response) -> Dialog | None:
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


def _best(finals: list[Response], request: Request) -> Response:
    """The response a proxy forwards when no branch answered (RFC 3261 section 16.7 step 6)."""
    if not finals:
        return reply(request, 480, "Temporarily Unavailable")
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    best = min(finals, key=lambda r: (r.status // 100 if r.status // 100 != 5 else 5.5, r.status))
    if best.status == 503:
        converted = best.copy()
        converted.status, converted.reason = 500, "Server Internal Error"
        return converted
    return best
