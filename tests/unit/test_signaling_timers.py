"""The proxy's transaction timers run from one heap of deadlines: a wakeup touches
only what is due (not every live transaction), the process sleeps while nothing
is due and wakes once per slot of deadlines, contexts are freed when their
transaction ends (the heap holds keys, not contexts), Timer C still cancels a
branch ringing too long and holds nothing of a branch that ended."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TypeVar

from quietwire.protocols.clock import Clock, MonotonicClock
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.transaction import T1
from quietwire.signaling.contexts import Branch, Context, ServerTable
from quietwire.signaling.errorlog import ErrorLog
from quietwire.signaling.flows import Flow, FlowTable
from quietwire.signaling.targets import Router, Target
from quietwire.signaling.transactions import LONG_SLOT, SHORT_SLOT, TIMER_C, Transactions

from tests.support.clock import FakeClock
from tests.unit.test_signaling_proxy import request


class NoPeers:
    async def write(self, target: Target, data: bytes) -> bool:
        return False

    async def receive(self, replica: str, data: bytes) -> bool:
        return False


async def nothing(request: Request) -> None:
    return None


class CountingClock(FakeClock):
    """Counts its reads: every transaction a tick looks at reads the clock."""

    def __init__(self, t: float) -> None:
        super().__init__(t)
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return self.t


def setup(transport: str = "TLS") -> tuple[Transactions, CountingClock, Flow, Flow]:
    return setup_on(CountingClock(1000.0), transport)


C = TypeVar("C", bound=Clock)


def setup_on(clock: C, transport: str) -> tuple[Transactions, C, Flow, Flow]:
    flows = FlowTable("r1")
    caller = Flow(flows.new_id(transport), transport, ("192.0.2.1", 5061), None)
    callee = Flow(flows.new_id(), "TLS", ("192.0.2.2", 5061), None)
    for flow in (caller, callee):
        flows.flows[flow.id] = flow
    tx = Transactions(
        ServerTable(100, 100),
        Router("r1", flows, NoPeers()),
        clock,
        ErrorLog(logging.getLogger("test"), clock),
        nothing,
    )
    return tx, clock, caller, callee


def sent(flow: Flow) -> list[bytes]:
    out = []
    while flow.backlog:
        out.append(flow.backlog.popleft())
    return out


async def forked(
    tx: Transactions, caller: Flow, callee: Flow, call_id: str = "c1"
) -> tuple[Context, Branch]:
    """An INVITE from ``caller`` with its one branch forwarded to ``callee``."""
    context = tx.open(caller, request(call_id=call_id))
    assert context is not None
    out = request()
    out.headers.add("Via", "SIP/2.0/TLS r1.example;branch=z9hG4bKout", first=True)
    await tx.fork(context, Target.of_flow(callee.id), out)
    (branch,) = context.branches.values()
    return context, branch


async def test_a_tick_polls_only_transactions_whose_timers_are_due() -> None:
    tx, clock, caller, callee = setup()
    for i in range(50):
        invite = request(call_id=f"c{i}")
        invite.headers.set("Via", f"SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK{i}")
        context = tx.open(caller, invite)
        assert context is not None
        out = invite.copy()
        out.headers.add("Via", f"SIP/2.0/TLS r1.example;branch=z9hG4bKout{i}", first=True)
        await tx.fork(context, Target.of_flow(callee.id), out)
    clock.t += 1.0
    reads = clock.reads
    assert tx.poll() == []
    assert clock.reads == reads + 1  # the tick's own: 50 live branches, none due, none looked at
    clock.t += 64 * T1  # Timer B of every branch (no answer at all)
    reads = clock.reads
    touched = tx.poll()
    assert len(touched) == 50 and clock.reads == reads + 1 + 50
    assert all(b.tx.terminated for c in touched for b in c.branches.values())


async def waiting(tx: Transactions) -> asyncio.Task[None]:
    """The timer loop's wait, started and parked on its future."""
    task = asyncio.create_task(tx.due())
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_nothing_due_no_wakeup_set() -> None:
    tx, _, caller, _ = setup()
    task = await waiting(tx)
    assert tx.wakeup is None  # no tick: asleep until a deadline is announced
    context = tx.open(caller, request("MESSAGE"))
    assert context is not None
    await tx.respond(context, reply(context.request, 200, "OK"))  # TLS: no timer left
    assert tx.wakeup is None and not task.done()
    task.cancel()


async def test_wait_timers_share_a_one_second_slot_retransmissions_fifty_ms() -> None:
    tx, clock, caller, callee = setup("UDP")
    clock.t = 1000.3
    task = await waiting(tx)
    await forked(tx, caller, callee)  # Timer B (64*T1) of a branch over TLS, Timer C
    assert tx.wakeup == 1033.0 == (1000.3 + 64 * T1) // LONG_SLOT * LONG_SLOT + LONG_SLOT
    await forked(tx, caller, callee, "c2")  # another call's in the same second: same slot
    assert tx.wakeup == 1033.0
    udp = tx.open(caller, request(call_id="c3"))
    assert udp is not None
    await tx.respond(udp, reply(udp.request, 486, "Busy Here"))  # Timer G (T1) over UDP
    assert tx.wakeup is not None and 1000.8 <= tx.wakeup < 1000.8 + SHORT_SLOT
    task.cancel()


async def test_the_wait_ends_at_a_deadline_and_the_poll_runs_its_timer() -> None:
    """Real clock and loop: the answer over UDP is sent again at Timer G (T1)."""
    tx, clock, caller, _ = setup_on(MonotonicClock(), "UDP")
    context = tx.open(caller, request())
    assert context is not None
    await tx.respond(context, reply(context.request, 486, "Busy Here"))
    started = clock.now()
    assert len(sent(caller)) == 1
    await asyncio.wait_for(tx.due(), 10 * T1)
    assert clock.now() >= started + T1
    tx.poll()
    await tx.resend()
    assert [data[:21] for data in sent(caller)] == [b"SIP/2.0 486 Busy Here"]  # Timer G
    assert tx.wakeup is None


async def test_a_context_answered_over_tls_is_freed_without_a_tick() -> None:
    tx, _, caller, _ = setup()
    context = tx.open(caller, request("MESSAGE"))
    assert context is not None and len(tx.servers) == 1
    await tx.respond(context, reply(context.request, 200, "OK"))
    assert len(tx.servers) == 0
    assert sent(caller)[0].startswith(b"SIP/2.0 200 OK")


async def test_over_udp_timer_g_resends_and_timer_h_frees() -> None:
    tx, clock, caller, _ = setup("UDP")
    context = tx.open(caller, request())
    assert context is not None
    context.finished = True
    await tx.respond(context, reply(context.request, 486, "Busy Here"))
    assert [data[:21] for data in sent(caller)] == [b"SIP/2.0 486 Busy Here"]
    clock.t += T1
    tx.poll()
    await tx.resend()
    assert [data[:21] for data in sent(caller)] == [b"SIP/2.0 486 Busy Here"]  # Timer G
    clock.t += 64 * T1
    tx.poll()
    assert len(tx.servers) == 0  # Timer H: no ACK, the context goes


async def test_timer_c_cancels_a_branch_ringing_too_long() -> None:
    tx, clock, caller, callee = setup()
    _, branch = await forked(tx, caller, callee)
    sent(callee)
    clock.t += 60.0
    ringing = Response(status=180, reason="Ringing")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in branch.request.headers.get_all(name):
            ringing.headers.add(name, value)
    branch.tx.receive(ringing)
    branch.ringing_since = clock.now()
    clock.t += TIMER_C - 59.0  # TIMER_C after the fork, 121 s into ringing
    tx.poll()
    assert not branch.cancelled
    clock.t += 60.0  # TIMER_C into ringing
    tx.poll()
    assert branch.cancelled
    await asyncio.sleep(0)
    assert any(data.startswith(b"CANCEL ") for data in sent(callee))


async def test_timer_c_holds_nothing_of_a_branch_that_ended() -> None:
    """A call answered at once: once its transactions' timers ran out, nothing of
    its context waits for the branch's Timer C (three minutes of every call's
    messages, in a process making calls all day)."""
    tx, clock, caller, callee = setup()
    context, branch = await forked(tx, caller, callee, "answered-at-once")
    tx.drop_branch(branch)  # answered: the branch and the context are done
    tx.servers.remove(context.key)
    del context, branch
    clock.t += 64 * T1  # every transaction timer of theirs is due
    tx.poll()
    assert not alive("answered-at-once")


async def test_the_heap_holds_nothing_of_a_context_that_ended() -> None:
    """A call over as soon as it was answered: its transactions' deadlines (32 s
    of Timer B, F, L, M) stay on the heap, but nothing of its context waits for
    them (a call's messages, dialog and transactions, times every call of 32 s,
    for the collector to walk)."""
    tx, _, caller, callee = setup()
    context, branch = await forked(tx, caller, callee, "over-at-once")
    tx.drop_branch(branch)
    tx.servers.remove(context.key)
    del context, branch
    assert not alive("over-at-once")


def alive(call_id: str) -> bool:
    """Whether a context of ``call_id`` is still held, after a collection. (By
    search: a compiled Context cannot be weakly referenced.)"""
    gc.collect()
    return any(isinstance(o, Context) and o.request.call_id == call_id for o in gc.get_objects())
