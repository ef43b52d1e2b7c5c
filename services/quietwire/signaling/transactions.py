"""The proxy's transaction layer (RFC 3261 sections 16 and 17): a server
transaction per request upstream (capped, :class:`.contexts.ServerTable`), a
client transaction per branch downstream, their timers, CANCEL matching, and
what happens when handling a request raises: a 500, everything of it freed.

It knows nothing of routing or media; :class:`.proxy.Proxy` decides, this
sends and keeps the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections.abc import Callable, Coroutine

from prometheus_client import Counter

from quietwire.protocols.clock import Clock
from quietwire.protocols.sip.message import Request, Response
from quietwire.protocols.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
    State,
)
from quietwire.runtime.metrics import Series
from quietwire.signaling.admission import source_key
from quietwire.signaling.builders import busy, cancel_for, final, with_to_tag
from quietwire.signaling.contexts import Branch, ClientTx, Context, ServerTable, ServerTx
from quietwire.signaling.errorlog import ErrorLog
from quietwire.signaling.failures import failure_answer
from quietwire.signaling.flows import Flow, reliable
from quietwire.signaling.targets import Router, Target

#: Timer C (RFC 3261 section 16.6 step 11): how long a branch may ring.
TIMER_C = 180.0
#: Seconds a caller refused by a transaction cap is asked to wait (Retry-After).
RETRY_AFTER = 5
#: How late a timer may run. Deadlines are gathered into slots, one wakeup per
#: slot that holds a deadline and none while nothing is due: a retransmission
#: timer (T1..T2) into 50 ms, a wait timer (Timer B, F, H, L, M: 64*T1; Timer C)
#: into a second, so a call's half-dozen 32 s deadlines do not each wake the
#: process again (most were stopped long before: their entries are dropped then).
SHORT_SLOT = 0.05
LONG_SLOT = 1.0
#: A deadline this far ahead or more is a wait timer's.
LONG_AHEAD = 8.0

FORWARDS = Series(
    Counter(
        "quietwire_sip_proxied", "Requests proxied, by method and outcome", ["method", "outcome"]
    )
)

Work = Coroutine[object, object, None]
#: A timer heap entry: deadline, tie-break, the key of the context and the name
#: of its branch (None: its server transaction), looked up when due: a
#: transaction over in a second keeps nothing of its call (requests, responses,
#: dialog) alive until its longest timer's deadline, and no cycle through it.
Due = tuple[float, int, ServerKey, str | None]


class Transactions:
    def __init__(
        self,
        servers: ServerTable,
        router: Router,
        clock: Clock,
        errors: ErrorLog,
        release: Callable[[Request], Coroutine[object, object, None]],
    ) -> None:
        """``release``: frees the media a request planned (when its handling fails)."""
        self.servers, self.router, self.clock, self.errors = servers, router, clock, errors
        self.release = release
        self.clients: dict[str, tuple[Context, Branch]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._resend: list[Context] = []
        #: Every deadline a transaction announced: a wakeup looks only at what is
        #: due. Entries of timers stopped since are found not due and dropped.
        self._due: list[Due] = []
        self._order = itertools.count()
        #: Each INVITE branch's Timer C deadline and the branch's name, looked up
        #: when due: a branch answered in a second does not keep its whole context
        #: (requests, responses, transactions) for the three minutes of Timer C.
        self._timer_c: list[tuple[float, str]] = []
        #: :meth:`due`'s waiter, and the slot its loop timer is set for.
        self._waiter: asyncio.Future[None] | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._armed = math.inf

    # -- server side -------------------------------------------------------------------

    async def absorbed(self, request: Request) -> bool:
        """A retransmission, or the ACK of our non-2xx final, taken by its live transaction."""
        known = self.servers.get(ServerKey.of(request))
        if known is None:
            return False
        known.server.receive(request)
        await self.flush(known)
        return True

    def open(self, flow: Flow, request: Request) -> Context | None:
        """A server transaction for a new request; None (answered 503) over a cap."""
        source = source_key(flow.remote[0])  # an IPv6 source is its /64
        if not self.servers.admits(source):
            flow.send_message(busy(request, RETRY_AFTER))
            return None
        server: ServerTx = (
            ServerInviteTransaction(request, reliable(flow.id), self.clock)
            if request.method == "INVITE"
            else ServerNonInviteTransaction(request, reliable(flow.id), self.clock)
        )
        context = Context(request, server, flow, ServerKey.of(request), source)
        self._watch(server, context.key, None)
        self.servers.add(context)
        return context

    async def respond(self, context: Context, response: Response) -> None:
        context.server.respond(with_to_tag(response))
        if response.status >= 200 and not context.pending:
            context.finished = True
        await self.flush(context)

    async def flush(self, context: Context) -> None:
        for message in context.server.to_send:
            context.upstream.send_message(message)
        context.server.to_send.clear()
        context.server.to_tu.clear()
        self._settle(context)

    def stateless(self, context: Context, response: Response, outcome: str) -> None:
        """Answer a request nobody authenticated, outside its transaction, and free
        it: a stranger's INVITE never ACKed costs one datagram back over UDP, not
        a Timer G series (RFC 3261 section 16.3 lets a proxy answer statelessly),
        and holds no memory. A retransmission is answered again, one for one."""
        context.upstream.send_message(with_to_tag(response))
        context.finished = True
        self.servers.remove(context.key)
        FORWARDS(context.request.method, outcome).inc()

    async def guarded(self, context: Context, where: str, work: Work) -> None:
        """Run the handling of ``context``; whatever it raises ends it (:meth:`fail`)."""
        failure: Exception | None = None
        try:
            await work
        except Exception as exc:
            self.errors.record(where, exc)
            failure = exc  # ended after the handler (runtime/aio.py says why)
        if failure is not None:
            await self.fail(context, failure)
        self._settle(context)

    def _settle(self, context: Context) -> None:
        """Free a context whose server transaction is over and that has nothing left to do."""
        if context.finished and context.server.terminated:
            self.servers.remove(context.key)

    async def fail(self, context: Context, exc: BaseException) -> None:
        """A 500 (503 with Retry-After when a dependency is away) if the caller has
        no final answer yet; branches cancelled; the context and its media gone.
        Nothing of it stays (no retransmission either)."""
        for branch in context.pending:
            self.cancel_branch(branch, "server error")
        for name in context.branches:
            self.clients.pop(name, None)
        if context.server.state in (State.TRYING, State.PROCEEDING):
            context.server.respond(failure_answer(context.request, exc))
            with contextlib.suppress(Exception):
                await self.flush(context)
        context.finished = True
        self.servers.remove(context.key)
        if context.offer_from_callee is not None and not context.answered:
            self.background(self.release(context.request))

    async def cancel(self, flow: Flow, request: Request) -> None:
        """CANCEL of an INVITE we hold (RFC 3261 section 16.10): only from the flow
        the INVITE came on."""
        key = ServerKey.of(request)
        context = self.servers.get(ServerKey(key.branch, key.sent_by, "INVITE"))
        if context is None or context.upstream.id != flow.id:
            flow.send_message(final(request, 481, "Call/Transaction Does Not Exist"))
            return
        flow.send_message(final(request, 200, "OK"))
        for branch in context.pending:
            self.cancel_branch(branch, "caller cancelled")

    # -- client side -------------------------------------------------------------------

    async def fork(self, context: Context, target: Target, out: Request) -> None:
        """One branch: ``out`` down ``target`` in a client transaction of its own."""
        tx: ClientTx = (
            ClientInviteTransaction(out, reliable(target.flow_id), self.clock)
            if out.method == "INVITE"
            else ClientNonInviteTransaction(out, reliable(target.flow_id), self.clock)
        )
        branch = Branch(out.vias[0].branch or "", target, tx, out)
        self._watch(tx, context.key, branch.branch)
        if out.method == "INVITE":
            deadline = self.clock.now() + TIMER_C
            heapq.heappush(self._timer_c, (deadline, branch.branch))
            self._wake_by(deadline)
        context.branches[branch.branch] = branch
        self.clients[branch.branch] = (context, branch)
        tx.to_send.clear()
        if not await self.router.send(target, out):
            branch.final = final(context.request, 480, "Temporarily Unavailable")
            FORWARDS(out.method, "unreachable").inc()
            self.drop_branch(branch)
            return
        FORWARDS(out.method, "forwarded").inc()

    def branch_of(self, name: str, method: str) -> tuple[Context, Branch] | None:
        """The live branch a response belongs to (its Via branch and CSeq method)."""
        found = self.clients.get(name)
        if found is None or found[1].request.method != method:
            return None
        return found

    def cancel_branch(self, branch: Branch, reason: str) -> None:
        if branch.cancelled or branch.final is not None or branch.request.method != "INVITE":
            return
        branch.cancelled = True
        self.background(self.router.send(branch.target, cancel_for(branch.request, reason)))

    def drop_branch(self, branch: Branch) -> None:
        self.clients.pop(branch.branch, None)

    # -- timers and background work -----------------------------------------------------

    def _watch(self, tx: ServerTx | ClientTx, key: ServerKey, branch: str | None) -> None:
        """Put ``tx``'s timers, those running and those it will start, on the heap."""
        for deadline in tx.timers.values():
            self._at(deadline, key, branch)
        tx.on_timer = lambda deadline: self._at(deadline, key, branch)

    def _at(self, deadline: float, key: ServerKey, branch: str | None) -> None:
        heapq.heappush(self._due, (deadline, next(self._order), key, branch))
        self._wake_by(deadline)

    async def due(self) -> None:
        """Returns once a deadline on the heaps has come (its slot's): the caller
        then runs :meth:`poll` and :meth:`resend`. While nothing is due the
        process sleeps: no tick."""
        self._waiter = asyncio.get_running_loop().create_future()
        heads = [heap[0][0] for heap in (self._due, self._timer_c) if heap]
        if heads:
            self._wake_by(min(heads))
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._disarm()

    def _wake_by(self, deadline: float) -> None:
        """Set :meth:`due`'s loop timer for the slot of ``deadline`` unless it is
        set for that slot or an earlier one (or nobody waits: :meth:`due` looks
        at the heaps when it starts)."""
        if self._waiter is None:
            return
        now = self.clock.now()
        width = LONG_SLOT if deadline - now >= LONG_AHEAD else SHORT_SLOT
        slot = math.ceil(deadline / width) * width if deadline > now else now
        if slot >= self._armed:
            return
        self._disarm()
        self._armed = slot
        # A millisecond late rather than early: the loop's clock counts milliseconds.
        delay = slot - now + 1e-3
        self._alarm = asyncio.get_running_loop().call_later(delay, self._ring)

    @property
    def wakeup(self) -> float | None:
        """The slot :meth:`due` will return at (on :attr:`clock`); None: asleep
        until a deadline is announced, or nobody waits."""
        return None if self._alarm is None else self._armed

    def _ring(self) -> None:
        self._alarm, self._armed = None, math.inf
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm, self._armed = None, math.inf

    def poll(self) -> list[Context]:
        """Run the transaction timers that are due; returns contexts whose branches
        need attention."""
        touched: list[Context] = []
        now = self.clock.now()
        while self._due and self._due[0][0] <= now:
            _, _, key, name = heapq.heappop(self._due)
            if name is None:
                server = self.servers.get(key)
                if server is not None:  # else freed already
                    self._server_due(server)
                continue
            live = self.clients.get(name)
            if live is not None:
                context, branch = live
                branch.tx.poll()
                if branch.tx.to_tu or branch.tx.to_send or branch.tx.terminated:
                    touched.append(context)
        while self._timer_c and self._timer_c[0][0] <= now:
            _, name = heapq.heappop(self._timer_c)
            live = self.clients.get(name)
            if live is not None:
                self._timer_c_due(live[1], now)
        return list(dict.fromkeys(touched))

    def _server_due(self, context: Context) -> None:
        context.server.poll()
        if context.server.to_send:
            self._resend.append(context)  # a final response again, over UDP (timer G)
        self._settle(context)

    def _timer_c_due(self, branch: Branch, now: float) -> None:
        """Timer C (RFC 3261 section 16.6 step 11): a branch ringing too long is cancelled.
        Checked TIMER_C after the branch starts, then after it starts ringing."""
        if branch.cancelled:
            return
        if branch.ringing_since is None:
            heapq.heappush(self._timer_c, (now + TIMER_C, branch.branch))
            self._wake_by(now + TIMER_C)
        elif now - branch.ringing_since > TIMER_C:
            self.cancel_branch(branch, "timer C")
        else:
            deadline = branch.ringing_since + TIMER_C + 1e-3
            heapq.heappush(self._timer_c, (deadline, branch.branch))
            self._wake_by(deadline)

    async def resend(self) -> None:
        """What the server transactions' timers asked to send again."""
        resend, self._resend = self._resend, []
        for context in resend:
            await self.flush(context)

    def background(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.errors.record("background", exc)
